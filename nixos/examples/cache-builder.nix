# nixos/examples/cache-builder.nix
# A cache builder host of its own (any number): it leases dependencies jobs
# from the API host, builds them into its store and serves that store to the
# workers with nix-serve, signed.
{
  services.nixjail = {
    enable = true;
    api.enable = false;
    runner.enable = false;
    cacheBuilder = {
      enable = true;
      apiUrl = "http://api.internal:8460";
      apiTokenFile = "/run/secrets/nixjail-worker-token";
    };
  };
  # nix-serve serves (and signs) every path of this host's store: keep the
  # host a cache builder only, and its port open to the workers only.
  services.nix-serve = {
    enable = true;
    secretKeyFile = "/run/secrets/nixjail-cache.sec";
    openFirewall = true;
  };
}
