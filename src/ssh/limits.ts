// Defaults of the embedded SSH server's limits (`[ssh]` in the config file), apart from the server so the
// configuration can name them without loading the SSH library.

/** SSH sessions open at once, in total. */
export const DEFAULT_MAX_SSH_SESSIONS = 64;
/** SSH sessions open at once with one key (Nix opens one per command, two with --max-jobs). */
export const DEFAULT_MAX_SSH_SESSIONS_PER_KEY = 8;
