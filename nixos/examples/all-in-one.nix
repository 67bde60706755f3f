# nixos/examples/all-in-one.nix
# One host with every role: the API on 127.0.0.1:8460, the runner with
# Docker, the cache builder, lease expiry and garbage collection.
{
  services.nixjail = {
    enable = true;
    cacheBuilder.enable = true;
    apiTokensFile = "/run/secrets/nixjail-api-tokens";
    settings.runner.concurrency = 4;
  };
}
