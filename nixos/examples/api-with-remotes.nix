# nixos/examples/api-with-remotes.nix
# An API host that keeps a runner and a cache builder of its own and serves
# remote workers too, which substitute its environments from its nix-serve
# (their `caches` name http://api.internal:5000).
{
  services.nixjail = {
    enable = true;
    api = {
      listenAddress = "::";
      openFirewall = true;
    };
    apiTokensFile = "/run/secrets/nixjail-api-tokens";
    cacheBuilder.enable = true;
    settings.runner.concurrency = 2;
  };
  services.nix-serve = {
    enable = true;
    secretKeyFile = "/run/secrets/nixjail-cache.sec";
    openFirewall = true;
  };
}
