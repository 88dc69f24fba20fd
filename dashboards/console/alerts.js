// Alerts: the live list (server-sent events: a new or changed alert appears without a
// reload), filters, and an alert's detail with its sample events, the host's inventory at
// alert time, its history and the triage actions.
import { get, post, session, signInAgain } from './api.js';
import { el, replace, field, activatable, formatTime } from './dom.js';

const STATUSES = ['', 'open', 'acknowledged', 'resolved', 'suppressed'];
const LEVELS = ['', 'critical', 'high', 'medium', 'low', 'informational'];

function filtersOf(params) {
  return { status: params.get('status') ?? 'open', level: params.get('level') ?? '', rule: params.get('rule') ?? '' };
}

function matches(alert, filters) {
  return (!filters.status || alert.status === filters.status)
    && (!filters.level || alert.rule.level === filters.level)
    && (!filters.rule || alert.rule.id === filters.rule || alert.rule.title.toLowerCase().includes(filters.rule.toLowerCase()));
}

function groupText(alert) {
  return (alert.group || []).map(([k, v]) => `${k}=${v}`).join(' ');
}

export async function render(main, params, { navigate, rest, current: isCurrent }) {
  const filters = filtersOf(params);
  const status = el('select', {}, STATUSES.map((s) => el('option', { value: s, selected: s === filters.status }, s || 'any')));
  const level = el('select', {}, LEVELS.map((s) => el('option', { value: s, selected: s === filters.level }, s || 'any')));
  const rule = el('input', { type: 'text', value: filters.rule, placeholder: 'rule id or title' });
  const form = el('form', { id: 'alert-filters', class: 'panel row' },
    field('alert-status', 'Status', status), field('alert-level', 'Level', level), field('alert-rule', 'Rule', rule),
    el('div', {}, el('button', { type: 'submit' }, 'Filter')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ status: status.value, level: level.value, rule: rule.value.trim() });
    navigate(`/console/alerts?${query}`);
  });
  const live = el('span', { id: 'live-status', class: 'live' }, 'connecting…');
  const body = el('tbody');
  const table = el('table', { id: 'alerts' },
    el('thead', {}, el('tr', {}, ['Last seen', 'Level', 'Rule', 'Group', 'Host', 'Events', 'Status', 'Assignee'].map((h) => el('th', { scope: 'col' }, h)))), body);
  const detail = el('section', { id: 'alert-detail', class: 'panel', hidden: true, tabindex: '-1', 'aria-label': 'Alert detail' });
  main.append(el('div', { class: 'row' }, el('h1', { class: 'grow' }, 'Alerts'), live), form, detail, el('div', { class: 'panel' }, table));

  const rows = new Map();
  const open = (id) => {
    const query = new URLSearchParams(location.search);
    navigate(`/console/alerts/${encodeURIComponent(id)}?${query}`, { replace: true });
  };
  const upsert = (alert, fresh) => {
    const existing = rows.get(alert.id);
    if (!matches(alert, filters)) {
      if (existing) { existing.remove(); rows.delete(alert.id); }
      return;
    }
    const row = activatable(el('tr', { class: 'alert-row', dataset: { id: alert.id, status: alert.status } },
      el('td', {}, formatTime(alert.last_seen)),
      el('td', {}, el('span', { class: `badge level-${alert.rule.level || 'none'}` }, alert.rule.level || '')),
      el('td', {}, alert.rule.title),
      el('td', {}, groupText(alert)),
      el('td', {}, alert.host || ''),
      el('td', {}, String(alert.event_count)),
      el('td', {}, alert.status),
      el('td', {}, alert.assignee || '')), () => open(alert.id));
    if (existing) existing.replaceWith(row);
    else if (fresh) body.prepend(row);
    else body.append(row);
    rows.set(alert.id, row);
  };

  const load = async () => {
    const listed = await get('/api/v1/alerts', { status: filters.status, limit: 500 });
    for (const alert of listed.alerts) upsert(alert, false);
  };
  await load();
  if (!isCurrent()) return null;
  main.dataset.state = 'ready';

  const stream = new EventSource('/api/v1/alerts/stream');
  stream.addEventListener('open', () => { live.textContent = 'live'; live.classList.add('on'); });
  stream.addEventListener('error', async () => {
    live.classList.remove('on');
    if (stream.readyState !== EventSource.CLOSED) {
      live.textContent = 'reconnecting…';
      return;
    }
    // The stream gave up (signed out, or refused): find out whether the session is gone.
    live.textContent = 'disconnected';
    try { await session(); } catch { signInAgain(); }
  });
  // The server skipped changes this page was too slow for: read the list again.
  stream.addEventListener('lagged', () => { load(); });
  stream.addEventListener('alert', (event) => {
    const change = JSON.parse(event.data);
    upsert(change.alert, true);
    if (detail.dataset.id === change.alert.id) showAlert(detail, change.alert.id, upsert);
  });

  if (rest) showAlert(detail, rest, upsert);
  return () => stream.close();
}

async function showAlert(box, id, upsert) {
  box.hidden = false;
  box.dataset.id = id;
  let shown;
  try {
    shown = await get(`/api/v1/alerts/${encodeURIComponent(id)}`);
  } catch (error) {
    replace(box, el('p', { class: 'error' }, error.message));
    return;
  }
  const { alert, history, samples, inventory } = shown;
  const act = async (path, payload) => {
    try {
      const answer = await post(`/api/v1/alerts/${encodeURIComponent(id)}/${path}`, payload);
      upsert(answer.alert, false);
      await showAlert(box, id, upsert);
    } catch (error) {
      box.querySelector('.error').textContent = error.message;
    }
  };
  const button = (action, text) => el('button', { type: 'button', class: 'secondary', dataset: { action }, onclick: () => act(action) }, text);
  const assignee = el('input', { type: 'text', value: alert.assignee || '' });
  const note = el('textarea', { rows: 2, cols: 50 });
  const inventoryBox = el('pre', { id: 'alert-inventory', hidden: true });
  const inventoryButton = inventory && el('button', {
    type: 'button', class: 'secondary',
    onclick: async () => {
      inventoryBox.hidden = false;
      inventoryBox.textContent = 'Loading…';
      try {
        inventoryBox.textContent = JSON.stringify(await get(inventory), null, 2);
      } catch (error) {
        inventoryBox.textContent = error.message;
      }
    },
  }, 'Host inventory at alert time');

  replace(box,
    el('h2', {}, alert.rule.title, ' ', el('span', { class: `badge level-${alert.rule.level || 'none'}` }, alert.rule.level || '')),
    el('p', { class: 'muted' }, `${alert.status} · ${alert.event_count} events · first ${formatTime(alert.first_seen)} · last ${formatTime(alert.last_seen)} · ${groupText(alert)}`),
    alert.rule.runbook ? el('p', {}, 'Runbook: ', el('code', {}, alert.rule.runbook)) : null,
    el('p', { class: 'error', role: 'alert' }),
    el('div', { class: 'actions', role: 'group', 'aria-label': 'Alert actions' },
      button('ack', 'Acknowledge'), button('resolve', 'Resolve'), button('suppress', 'Suppress'), button('reopen', 'Reopen')),
    el('form', { class: 'row', onsubmit: (event) => { event.preventDefault(); act('assign', { assignee: assignee.value.trim() || null }); } },
      field('alert-assignee', 'Assignee', assignee), el('div', {}, el('button', { type: 'submit' }, 'Assign'))),
    el('form', { class: 'row', onsubmit: (event) => { event.preventDefault(); if (note.value.trim()) act('notes', { text: note.value }); } },
      field('alert-note', 'Note', note), el('div', {}, el('button', { type: 'submit' }, 'Add note'))),
    el('h3', {}, 'Sample events'),
    el('ul', { id: 'alert-samples' }, samples.map((s) => el('li', {},
      s.event_id ? el('a', { href: `/console/search?${new URLSearchParams({ q: `event.id:${s.event_id}`, range: '30d' })}` }, s.event_id) : '(no event id)',
      ` at ${formatTime(s.event_time)}`))),
    inventoryButton, inventoryBox,
    el('h3', {}, 'History'),
    el('ol', { id: 'alert-history' }, history.map((h) => el('li', {}, `${formatTime(h.at)} ${h.actor || ''} ${h.action || h.change || ''} ${h.detail || ''}`))));
  box.focus();
}
