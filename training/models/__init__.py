"""Model parts (inputs, experts, gates, losses) and the recipes that compose them."""
