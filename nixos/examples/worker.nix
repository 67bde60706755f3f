# nixos/examples/worker.nix
# A worker host of its own (any number): its runner leases from the API host
# and substitutes environments from the cache builders, signed.
{
  services.nixjail = {
    enable = true;
    api.enable = false;
    runner = {
      apiUrl = "http://api.internal:8460";
      apiTokenFile = "/run/secrets/nixjail-worker-token";
    };
    caches = [
      "http://builder-1.internal:5000"
      "http://builder-2.internal:5000"
    ];
    cachePublicKeys = [
      "builder-1:bQoJ6hKmEvgJ9V3A8RvQX0qRTr3erbN7HvfuwpDszjM="
      "builder-2:Vz1zA3fO5nqxD8Qm7CuyBkJ7q6ZvV8m7l3rM2m5mGkE="
    ];
    settings.runner.concurrency = 8;
  };
}
