"""The Flower ClientApp (wiring only): one site's train and evaluate handlers and their mods."""
