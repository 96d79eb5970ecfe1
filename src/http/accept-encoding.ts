// Reading a request's Accept-Encoding: transport encodings are sent only to clients that list them
// (PROTOCOL.md §6.5; Nix 2.8 sends none and must get identity).

/** Whether `header` (Accept-Encoding) lists `coding` with a non-zero quality. */
export function acceptsEncoding(header: string | undefined, coding: string): boolean {
  if (header === undefined) return false;
  for (const item of header.split(',')) {
    const [name = '', ...parameters] = item.split(';').map((part) => part.trim().toLowerCase());
    if (name !== coding) continue;
    const quality = parameters.find((parameter) => parameter.startsWith('q='));
    return quality === undefined || Number(quality.slice(2)) > 0;
  }
  return false;
}
