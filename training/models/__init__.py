"""Model definitions: the VAE that ships, and the generators used to augment data."""
