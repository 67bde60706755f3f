"""The cache builder: lease dependencies jobs, build each environment in
nsjail, store and root it, publish it signed to the workers' binary cache."""
