// Endpoints go into error messages and logs; user info, query and fragment could carry secrets.

/** The endpoint without user info, query or fragment. */
export function redactUrl(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
  } catch {
    return '(an endpoint that is not a URL)';
  }
}
