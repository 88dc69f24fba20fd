// The console's only way to the collector: same-origin fetches with the session cookie,
// the CSRF token on every state-changing request, and problem documents turned into
// errors. A 401 sends the analyst to the sign-in page and back.

let csrfToken = '';

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function signInAgain() {
  const next = location.pathname + location.search;
  location.assign('/console/login?next=' + encodeURIComponent(next));
}

async function answer(response) {
  let body = null;
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) {
    try { body = await response.json(); } catch { body = null; }
  }
  if (response.status === 401) {
    signInAgain();
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** The caller's session (user, role, CSRF token); remembers the token. */
export async function session() {
  const body = await answer(await fetch('/shop/api/session', { credentials: 'same-origin' }));
  csrfToken = body.csrf_token || '';
  return body;
}

export function url(path, params = {}) {
  const target = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') target.searchParams.set(key, value);
  }
  return target;
}

export async function get(path, params = {}, signal = undefined) {
  return answer(await fetch(url(path, params), {
    credentials: 'same-origin', headers: { accept: 'application/json' }, signal,
  }));
}

export async function post(path, body = undefined) {
  return answer(await fetch(url(path), {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrfToken, accept: 'application/json' },
    body: body === undefined ? '' : JSON.stringify(body),
  }));
}

export async function signOut() {
  try { await post('/shop/api/logout'); } finally { location.assign('/console/login'); }
}
