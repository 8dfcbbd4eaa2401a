// The page's session: the /ws address of its server and the tab's token. The connection itself
// (reconnecting, authenticating, resuming runs) is the runcast-client package's (/js/client.js).

const TOKEN_KEY = 'runcast.token';

/** The /ws URL of the page's own server: ws: or wss: like the page. */
export function socketUrl(loc = window.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/**
 * A token handed over in the page's address (`#token=...`, or `#/runs/ID?token=...`): keep
 * it for this tab and take it out of the address. The fragment never reaches the server
 * or its logs. Returns the address's fragment without it.
 */
export function takeTokenFromAddress(loc = window.location, history = window.history) {
  const match = /^(.*?)[#?&]token=([^&]*)(.*)$/.exec(loc.hash);
  if (!match) return loc.hash;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[2]));
  const rest = `${match[1]}${match[3].replace(/^&/, match[1].includes('?') ? '&' : '?')}`;
  const hash = rest === '' || rest === '#' ? '#/' : rest;
  history.replaceState(null, '', `${loc.pathname}${loc.search}${hash}`);
  return hash;
}

/** Who the tab's token says it is: a signed token's `sub`, or null (a server token, or none). */
export function signedInAs() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const payload = token?.split('.')[1];
  if (!payload) return null;
  try {
    const claims = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/')));
    return typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null; // not a JWT: a server's --token
  }
}

/** The token function of the page's client: the tab's token, read afresh at every connect. */
export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** A token typed by the user: kept for this tab. */
export function keepToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

/** The tab's token was refused: forget it. */
export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}
