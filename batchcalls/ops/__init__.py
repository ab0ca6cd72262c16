"""Local operations tooling: the CLI, embedded servers, the supervisor, the demo's receiver, the API client."""
