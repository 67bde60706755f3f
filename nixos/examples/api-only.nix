# nixos/examples/api-only.nix
# The API host of several: no runner and no cache builder here; remote
# workers and cache builders lease from it.
{
  services.nixjail = {
    enable = true;
    api = {
      listenAddress = "0.0.0.0";
      openFirewall = true; # or a TLS reverse proxy in front
    };
    apiTokensFile = "/run/secrets/nixjail-api-tokens";
    runner.enable = false;
    # Queue a dependencies job for the (remote) cache builders.
    settings.cache_builder.enabled = true;
  };
}
