"""python -m service: serve the bundle named by MOERANK_BUNDLE_PATH with uvicorn."""

import uvicorn

from service.app import create_app
from service.settings import Settings


def main() -> None:
    settings = Settings()
    url = f"http://{settings.host}:{settings.port}"
    if settings.example_request_path and settings.example_request_path.exists():
        print(
            f"\nmoerank is starting on {url}. Once it is up, rank a real session with:\n\n"
            f"  curl -s -X POST {url}/v1/rank -H 'content-type: application/json' "
            f"-d @{settings.example_request_path}\n",
            flush=True,
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
