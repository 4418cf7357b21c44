__version__ = "0.1.0.dev0"

#: The ``User-Agent`` of every request the library sends (API calls and image downloads).
USER_AGENT = f"gptimage-async/{__version__}"
