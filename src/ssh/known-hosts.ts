// How a client's known_hosts names the embedded SSH server: `[host]:port key`, or `host key` on port 22.
// Apart from the SSH server so that the start-up banner can print it without loading the SSH library.

/** The known_hosts line of `hostKey` (`ssh-ed25519 AAAA…`) served at `host` (as given) and `port`. */
export function knownHostsLine(host: string, port: number, hostKey: string): string {
  return `${port === 22 ? host : `[${host}]:${port}`} ${hostKey}`;
}
