# services.niche: niche as a NixOS service. `settings` is niche.toml as Nix (README: "Config file and
# scale-out"), rendered to TOML; secrets never enter the Nix store: the signing key is a systemd
# credential read from a file, and a database URL with a password comes from an environment file.
#
#   imports = [ ./deploy/nixos/module.nix ];
#   services.niche = {
#     enable = true;
#     package = niche;                       # the niche package (bin/niche)
#     openFirewall = true;
#     signingKeyFile = "/var/keys/cache.sk"; # optional: the default cache signs with this key
#     tlsCertFile = "/var/lib/acme/cache.example.org/fullchain.pem";   # optional: HTTPS without a proxy
#     tlsKeyFile = "/var/lib/acme/cache.example.org/key.pem";
#     settings.public-url = "https://cache.example.org";
#     localStore.enable = true;              # also serve this host's /nix/store (replaces nix-serve)
#   };
{ config, lib, pkgs, ... }:
let
  cfg = config.services.niche;
  inherit (lib) mkDefault mkEnableOption mkIf mkOption optional optionalAttrs types;
  settingsFormat = pkgs.formats.toml { };
  credentials = "/run/credentials/niche.service";
  # The port of a listen address ("0.0.0.0:5000", "[::]:5000").
  portOf = address: lib.toInt (lib.last (lib.splitString ":" address));
  configFile = settingsFormat.generate "niche.toml" cfg.settings;
in
{
  options.services.niche = {
    enable = mkEnableOption "niche, a signed, multi-tenant Nix binary cache";

    package = mkOption {
      type = types.package;
      description = "The niche package; its bin/niche is started.";
    };

    settings = mkOption {
      type = settingsFormat.type;
      default = { };
      example = {
        public-url = "https://cache.example.org";
        limits.max-nar-size = "16G";
        database = { type = "postgres"; url = "postgres://niche@db.example.org/niche"; };
      };
      description = ''
        niche.toml as Nix: every key of the README's config file section. `data-dir` defaults to
        /var/lib/niche and `listen` to [ "[::]:5000" ]. Secrets do not belong here (the Nix store is
        world-readable): use signingKeyFile and environmentFile.
      '';
    };

    signingKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/keys/cache.sk";
      description = ''
        A secret key (nix-store --generate-binary-cache-key) the default cache signs with, given to the
        service as a systemd credential; the file stays where it is, readable by root only.
      '';
    };

    tlsCertFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/acme/cache.example.org/fullchain.pem";
      description = ''
        Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate and chain, given to the service as a
        systemd credential (with tlsKeyFile). Credentials are copied when the service starts: restart it
        after a renewal (e.g. security.acme.certs.<name>.reloadServices = [ "niche" ] restarts it).
      '';
    };

    tlsKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/acme/cache.example.org/key.pem";
      description = "The PEM private key of tlsCertFile, given to the service as a systemd credential.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/keys/niche.env";
      description = ''
        Environment variables for secrets, e.g. NICHE_DATABASE_URL=postgres://niche:password@host/niche
        or AWS_SECRET_ACCESS_KEY=… for S3 storage.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP ports of `settings.listen` in the firewall.";
    };

    localStore = {
      enable = mkEnableOption "serving this host's /nix/store too, read-only (instead of nix-serve or harmonia)";
      root = mkOption {
        type = types.bool;
        default = false;
        description = "Serve the host's store at / as well, where nix-serve was, so existing clients keep working.";
      };
    };
  };

  config = mkIf cfg.enable {
    services.niche.settings = {
      data-dir = mkDefault "/var/lib/niche";
      listen = mkDefault [ "[::]:5000" ];
    }
    // optionalAttrs (cfg.signingKeyFile != null) { signing-key-file = "${credentials}/signing-key"; }
    // optionalAttrs (cfg.tlsCertFile != null) { tls-cert = "${credentials}/tls-cert"; }
    // optionalAttrs (cfg.tlsKeyFile != null) { tls-key = "${credentials}/tls-key"; }
    // optionalAttrs cfg.localStore.enable {
      local-store = { enabled = true; root = cfg.localStore.root; };
    };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall (map portOf cfg.settings.listen);

    systemd.services.niche = {
      description = "niche, a Nix binary cache";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      environment.NICHE_DATA = cfg.settings.data-dir;
      serviceConfig = {
        ExecStart = "${lib.getExe' cfg.package "niche"} serve --config ${configFile}";
        KillSignal = "SIGTERM";
        TimeoutStopSec = "90s";
        Restart = "on-failure";
        RestartSec = "2s";
        LimitNOFILE = 65536;
        LoadCredential = optional (cfg.signingKeyFile != null) "signing-key:${cfg.signingKeyFile}"
          ++ optional (cfg.tlsCertFile != null) "tls-cert:${cfg.tlsCertFile}"
          ++ optional (cfg.tlsKeyFile != null) "tls-key:${cfg.tlsKeyFile}";
        EnvironmentFile = optional (cfg.environmentFile != null) cfg.environmentFile;

        DynamicUser = true;
        StateDirectory = "niche";
        StateDirectoryMode = "0700";
        UMask = "0077";
        # The same hardening as deploy/systemd/niche.service (V8 needs writable executable memory).
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
