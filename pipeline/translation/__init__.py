"""task translate: the image-to-image GAN's data, training, evaluation and rendering."""
