"""Names the command line offers as choices, kept free of torch so that
``fastgan --help`` and argument errors answer before torch is imported."""

DATASETS = ("8gaussians", "25gaussians", "swissroll", "digits")
RECIPE_NAMES = ("gan", "wgan", "wgan-gp", "r3gan")  # the keys of fastgan.train.recipes.RECIPES
VAE_RECIPES = ("vae", "vae-gan")  # the keys of fastgan.train.vae.VAE_RECIPES
BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")  # fastgan.BACKENDS (fastgan._backend imports torch)
LR_DECAYS = ("none", "linear")
