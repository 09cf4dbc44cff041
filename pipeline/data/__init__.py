"""Dataset sources and the manifest that describes every image."""
