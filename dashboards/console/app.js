// The console shell: who is signed in, the page router (the URL holds each page's whole
// state, so any view can be shared as a link), and the rule-load notice on every page.
import { session, signOut, get } from './api.js';
import { el, replace } from './dom.js';
import * as search from './search.js';
import * as alerts from './alerts.js';
import * as fleet from './fleet.js';
import * as rules from './rules.js';
import * as dashboards from './dashboards.js';

const PAGES = { search, alerts, fleet, rules, dashboards };
const main = document.getElementById('page');
let leave = null;

function pageOf(path) {
  const name = path.replace(/^\/console\/?/, '').split('/')[0] || 'search';
  return PAGES[name] ? name : 'search';
}

/** Goes to a console URL without reloading (`replace` keeps the history entry). */
export function navigate(target, { replace: replaceEntry = false } = {}) {
  if (replaceEntry) history.replaceState(null, '', target);
  else history.pushState(null, '', target);
  return show();
}

let shown = 0;

async function show() {
  if (leave) {
    leave();
    leave = null;
  }
  // A newer navigation may start while this page still waits for its data: the page
  // then drops what it fetched (`current()` is false) and its clean-up runs at once.
  shown += 1;
  const mine = shown;
  const current = () => mine === shown;
  const name = pageOf(location.pathname);
  for (const link of document.querySelectorAll('header nav a')) {
    if (link.id === `nav-${name}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Yagura`;
  replace(main);
  delete main.dataset.state;
  const params = new URLSearchParams(location.search);
  let rest = location.pathname.replace(/^\/console\/[^/]*\/?/, '');
  try { rest = decodeURIComponent(rest); } catch { rest = ''; }
  let cleanUp = null;
  try {
    cleanUp = (await PAGES[name].render(main, params, { navigate, rest, current })) || null;
  } catch (error) {
    if (current()) {
      replace(main, el('p', { class: 'error', role: 'alert' }, `This page could not be loaded: ${error.message}`));
      main.dataset.state = 'error';
    }
  }
  if (current()) leave = cleanUp;
  else if (cleanUp) cleanUp();
}

/** Rule files that failed to load stay visible on every page until they are fixed. */
async function ruleNotice() {
  const notice = document.getElementById('notice');
  try {
    const catalog = await get('/api/v1/rules');
    const lines = [];
    if (catalog.refused) {
      lines.push(`Changed detection rules were refused at ${catalog.refused.at}; the previous rules are still running:`);
      lines.push(...catalog.refused.problems);
    }
    if (catalog.errors && catalog.errors.length) {
      lines.push('Rule files left out of the running set:');
      lines.push(...catalog.errors.map((p) => `${p.file}:${p.line}: ${p.message}`));
    }
    notice.hidden = lines.length === 0;
    notice.textContent = lines.join('\n');
  } catch {
    // The notice is a courtesy; the rules page shows the same with its own errors.
  }
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a');
  if (!link || link.target || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  if ((link.getAttribute('href') || '').startsWith('#')) return;
  const target = new URL(link.href, location.origin);
  if (target.origin !== location.origin || !target.pathname.startsWith('/console/') || link.hasAttribute('download')) return;
  event.preventDefault();
  if (target.pathname + target.search === location.pathname + location.search) return;
  navigate(target.pathname + target.search);
});
window.addEventListener('popstate', () => show());
document.getElementById('logout').addEventListener('click', () => signOut());

const me = await session();
document.getElementById('whoami').textContent = `${me.email} (${me.role})`;
await show();
ruleNotice();
setInterval(ruleNotice, 15_000);
