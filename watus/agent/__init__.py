"""The Watus agent: a pydantic-ai brain that hears (audio), looks (vision), thinks (LLM) and speaks."""
