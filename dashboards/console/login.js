// Sign-in: password, then the second factor — a TOTP code, or for an account without
// one yet, enrolment (QR code or secret, a confirming code, recovery codes shown once).
import { el, replace } from './dom.js';

const $ = (id) => document.getElementById(id);
let csrfToken = '';

function show(id) {
  for (const section of ['login-form', 'mfa-form', 'enrol', 'recovery']) {
    $(section).hidden = section !== id;
  }
  const first = $(id).querySelector('input, button');
  if (first) first.focus();
}

function problem(text) {
  $('login-error').textContent = text || '';
}

function next() {
  const wanted = new URLSearchParams(location.search).get('next') || '/console/search';
  // Only a page of the console itself: never an address elsewhere.
  try {
    const target = new URL(wanted, location.origin);
    if (target.origin === location.origin && target.pathname.startsWith('/console/')) {
      return target.pathname + target.search;
    }
  } catch {
    // Not a URL at all: the default below.
  }
  return '/console/search';
}

async function call(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrfToken },
    body: body === undefined ? '' : JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch { answer = {}; }
  if (answer.csrf_token) csrfToken = answer.csrf_token;
  if (!response.ok) throw new Error(answer.detail || `HTTP ${response.status}`);
  return answer;
}

async function afterPassword(answer) {
  if (!answer.mfa_required) {
    location.assign(next());
    return;
  }
  if (answer.mfa_enrolled) {
    show('mfa-form');
    return;
  }
  const enrolment = await call('/shop/api/mfa/enroll');
  $('enrol-qr').src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(enrolment.qr_svg);
  const secret = new URL(enrolment.otpauth_uri).searchParams.get('secret') || '';
  $('enrol-secret').textContent = secret;
  show('enrol');
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  problem('');
  try {
    const answer = await call('/shop/api/login', { email: $('email').value, password: $('password').value });
    $('password').value = '';
    await afterPassword(answer);
  } catch (error) {
    problem(error.message);
  }
});

$('mfa-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  problem('');
  const code = $('code').value.trim().replaceAll(' ', '');
  const body = /^\d{6}$/.test(code) ? { code } : { recovery_code: code };
  try {
    await call('/shop/api/login/mfa', body);
    location.assign(next());
  } catch (error) {
    problem(error.message);
    $('code').select();
  }
});

$('enrol-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  problem('');
  try {
    const answer = await call('/shop/api/mfa/confirm', { code: $('enrol-code').value.trim() });
    replace($('recovery-codes'), ...(answer.recovery_codes || []).map((c) => el('li', {}, el('code', {}, c))));
    show('recovery');
  } catch (error) {
    problem(error.message);
  }
});

$('enrol-continue').addEventListener('click', () => location.assign(next()));
$('email').focus();
