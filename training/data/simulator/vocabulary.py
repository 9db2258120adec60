"""Words for product titles and queries: category phrases, attributes, synonyms, brands.

Titles use the category's own word ("laptop"); queries often use another
member of the word's synonym group ("notebook"), which is what makes token overlap miss
matches that a semantic encoder catches. Tokens are lower-case runs of [a-z0-9]; that is
also how `lexical_overlap` tokenises query and title.
"""

from __future__ import annotations

import re

import numpy as np

# Synonym groups. A word is in at most one group, so replacing a word by a synonym is a
# lookup. Titles use the category's own word; for price adjectives, the first of the group.
SYNONYM_GROUPS = (
    ("laptop", "notebook"),
    ("tv", "television"),
    ("phone", "cellphone", "smartphone"),
    ("headphone", "earbud", "headset", "earphone"),
    ("sofa", "couch"),
    ("speaker", "loudspeaker"),
    ("refrigerator", "fridge"),
    ("monitor", "display", "screen"),
    ("case", "cover", "sleeve"),
    ("cable", "cord", "wire"),
    ("charger", "adapter"),
    ("computer", "pc"),
    ("camera", "cam"),
    ("camcorder", "videocam"),
    ("vacuum", "hoover"),
    ("movie", "film"),
    ("game", "videogame"),
    ("cd", "album"),
    ("music", "song"),
    ("watch", "smartwatch"),
    ("drone", "quadcopter"),
    ("range", "stove", "cooker"),
    ("kid", "child", "children"),
    ("microphone", "mic"),
    ("accessory", "addon", "extra"),
    ("furniture", "furnishing"),
    ("bag", "pouch"),
    ("car", "auto", "vehicle"),
    ("gps", "navigator", "satnav"),
    ("audio", "sound"),
    ("tablet", "pad"),
    ("projector", "beamer"),
    ("blender", "mixer"),
    ("grill", "barbecue", "bbq"),
    ("lamp", "light"),
    ("shaver", "razor", "trimmer"),
    ("fan", "ventilator"),
    ("heater", "warmer"),
    ("freezer", "icebox"),
    ("bike", "bicycle"),
    ("subwoofer", "woofer"),
    ("amplifier", "amp"),
    ("drum", "percussion"),
    ("home", "house"),
    ("wireless", "cordless", "bluetooth"),
    ("digital", "electronic"),
    ("smart", "connected"),
    ("mount", "bracket", "holder"),
    ("stand", "rack"),
    ("storage", "organizer"),
    ("printer", "printing"),
    ("battery", "batteries"),
    ("toy", "plaything"),
    ("kit", "set", "bundle"),
    ("drive", "disk"),
    ("protector", "guard", "shield"),
    ("part", "component", "spare"),
    ("electric", "electrical"),
    ("remote", "clicker"),
    ("control", "controller"),
    ("coffee", "java"),
    ("cleaning", "cleaner"),
    ("desktop", "tower"),
    ("refurbished", "renewed", "used"),
    ("business", "office", "work"),
    ("memory", "ram"),
    ("cell", "mobile"),
    ("outdoor", "outside", "patio"),
    ("pet", "animal"),
    ("appliance", "device", "gadget"),
    ("merchandise", "merch", "gear"),
    ("portable", "travel"),
    ("streaming", "stream"),
    ("extension", "extender"),
    ("radio", "tuner"),
    ("stereo", "hifi"),
    ("color", "colour"),
    ("flash", "strobe"),
    ("software", "app", "program"),
    ("learning", "education", "educational"),
    ("christmas", "xmas", "holiday"),
    ("rap", "hiphop"),
    ("chair", "seat"),
    ("table", "desk"),
    ("dryer", "drier"),
    ("machine", "maker"),
    ("juicer", "extractor"),
    ("stylus", "pen"),
    ("care", "maintenance"),
    ("product", "item"),
    ("keyboard", "keys"),
    ("filter", "strainer"),
    ("player", "deck"),
    # Attribute values.
    ("gray", "grey"),
    ("aluminum", "aluminium", "metal"),
    ("wood", "wooden"),
    ("fabric", "cloth"),
    ("small", "compact", "mini"),
    ("large", "big", "xl"),
    # Price adjectives: titles say "budget" / "premium", shoppers say either.
    ("budget", "cheap", "affordable", "inexpensive"),
    ("premium", "luxury", "deluxe"),
)
SYNONYMS = {word: group for group in SYNONYM_GROUPS for word in group}

COLOURS = ("black", "white", "silver", "gray", "red", "blue", "green", "gold", "pink", "brown")
MATERIALS = ("aluminum", "steel", "plastic", "leather", "wood", "glass", "fabric", "carbon")
SIZES = ("small", "medium", "large")
PRICE_LOW_WORD, PRICE_HIGH_WORD = "budget", "premium"

_STOPWORDS = frozenset(
    ("and", "for", "the", "all", "of", "with", "a", "an", "in", "on", "to", "by", "or", "s")
)
_IRREGULAR_SINGULARS = {
    "mice": "mouse",
    "children": "child",
    "tvs": "tv",
    "cds": "cd",
    "pcs": "pc",
    "lens": "lens",
    "christmas": "christmas",
    "series": "series",
    "news": "news",
    "glasses": "glasses",
}
_MAX_PHRASE_WORDS = 4
_SYLLABLE_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br")
_SYLLABLE_NUCLEI = ("a", "e", "i", "o", "u", "ai", "io")


def tokenize(text: str) -> list[str]:
    """Lower-case [a-z0-9] runs of `text`: the tokenisation of titles, queries and overlap."""
    return re.findall(r"[a-z0-9]+", text.lower())


def singular(word: str) -> str:
    """A crude English singular ("laptops" -> "laptop", "batteries" -> "battery")."""
    if word in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def category_phrase(name: str) -> tuple[str, ...]:
    """The content words of a category name, singular, at most the last four.

    "Laptops" -> ("laptop",); "Black & White Laser Printers" -> ("black", "white", "laser",
    "printer"). The last word is the head noun every title and query of the category carries.
    """
    words = [singular(w) for w in tokenize(name) if w not in _STOPWORDS]
    words = list(dict.fromkeys(words))  # "Apple Watch > Apple Watch" style repeats
    return tuple(words[-_MAX_PHRASE_WORDS:]) or ("item",)


def synonyms_of(word: str) -> tuple[str, ...]:
    """The other members of `word`'s synonym group (empty when it has none)."""
    return tuple(w for w in SYNONYMS.get(word, ()) if w != word)


def brand_names(n: int, rng: np.random.Generator) -> tuple[str, ...]:
    """`n` distinct made-up brand names of 2-3 syllables ("Bralio", "Vezun")."""
    taken = set(SYNONYMS) | set(COLOURS) | set(MATERIALS) | set(SIZES)
    names: list[str] = []
    while len(names) < n:
        syllables = rng.integers(2, 4)
        onsets = rng.choice(_SYLLABLE_ONSETS, size=syllables)
        nuclei = rng.choice(_SYLLABLE_NUCLEI, size=syllables)
        coda = rng.choice(("", "n", "x", "r"))
        name = "".join(o + v for o, v in zip(onsets, nuclei, strict=True)) + coda
        if name not in taken:
            taken.add(name)
            names.append(name.capitalize())
    return tuple(names)
