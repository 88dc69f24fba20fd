// Fleet: every agent with its status, last contact, version, lag, spool and losses, and a
// drill-down into one host's inventory at any time, with the changes that built it.
import { get } from './api.js';
import { el, replace, field, activatable, formatTime, display } from './dom.js';

function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export async function render(main, params, { navigate, rest, current: isCurrent }) {
  const [agents, losses] = await Promise.all([
    get('/api/v1/agents'),
    get('/api/v1/search', { q: 'event.dataset:yagura.agent.loss', since: '7d', limit: 1, agg: 'terms:agent.id:1000' }).catch(() => null),
  ]);
  if (!isCurrent()) return null;
  const lossCount = new Map(((losses && losses.aggregations && losses.aggregations['terms:agent.id:1000']) || { buckets: [] }).buckets.map((b) => [b.key, b.doc_count]));
  const detail = el('section', { id: 'agent-detail', class: 'panel', hidden: true, tabindex: '-1', 'aria-label': 'Agent detail' });
  const body = el('tbody');
  for (const agent of agents.filter((a) => a.kind === 'agent')) {
    const status = agent.status === 'revoked' ? 'revoked' : agent.connectivity;
    body.append(activatable(el('tr', { class: 'agent-row', dataset: { id: agent.id } },
      el('td', {}, agent.hostname),
      el('td', {}, el('span', { class: `badge status-${status}` }, status)),
      el('td', {}, formatTime(agent.last_seen_at)),
      el('td', {}, agent.version),
      el('td', {}, bytes(agent.lag_bytes)),
      el('td', {}, agent.spool_batches === null ? '' : `${agent.spool_batches} batches, ${bytes(agent.spool_bytes)}`),
      el('td', {}, String(lossCount.get(agent.id) || 0)),
      el('td', {}, Object.entries(agent.labels || {}).map(([k, v]) => `${k}=${v}`).join(' '))),
    () => navigate(`/console/fleet/${agent.id}`)));
  }
  main.append(el('h1', {}, 'Fleet'), detail, el('div', { class: 'panel' }, el('table', { id: 'agents' },
    el('thead', {}, el('tr', {}, ['Host', 'Status', 'Last seen', 'Version', 'Lag', 'Spool', 'Loss events (7 d)', 'Labels'].map((h) => el('th', { scope: 'col' }, h)))),
    body)));
  main.dataset.state = 'ready';
  const chosen = agents.find((a) => a.id === rest);
  if (chosen) showAgent(detail, chosen, params, navigate);
  return null;
}

function showAgent(box, agent, params, navigate) {
  box.hidden = false;
  const at = el('input', { type: 'text', value: params.get('at') || '', placeholder: 'now, 2h, or 2026-11-25T08:00:00Z' });
  const inventory = el('div', { id: 'inventory' });
  const form = el('form', { class: 'row' }, field('inventory-at', 'Inventory at', at), el('div', {}, el('button', { type: 'submit' }, 'Show')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    navigate(`/console/fleet/${agent.id}?${new URLSearchParams({ at: at.value.trim() })}`, { replace: true });
  });
  const history = new URLSearchParams({ q: `agent.id:${agent.id} AND event.dataset:yagura.agent.inventory`, range: '7d' });
  replace(box, el('h2', {}, agent.hostname),
    el('p', { class: 'muted' }, `agent ${agent.id} · enrolled ${formatTime(agent.enrolled_at)} · uptime ${agent.uptime_seconds ?? '?'} s`),
    el('p', {}, el('a', { href: `/console/search?${history}` }, 'Inventory changes of this host (history)')),
    form, inventory);
  box.focus();
  loadInventory(inventory, agent.id, params.get('at'));
}

async function loadInventory(box, id, at) {
  replace(box, el('p', { class: 'muted' }, 'Rebuilding the inventory…'));
  try {
    const found = await get(`/api/v1/agents/${encodeURIComponent(id)}/inventory`, { at: at || undefined });
    const parts = [];
    for (const [key, value] of Object.entries(found)) {
      if (Array.isArray(value)) {
        parts.push(el('details', {}, el('summary', {}, `${key} (${value.length})`), table(value)));
      } else if (value && typeof value === 'object') {
        parts.push(el('details', {}, el('summary', {}, key), el('pre', {}, JSON.stringify(value, null, 2))));
      } else {
        parts.push(el('p', {}, `${key}: ${display(value)}`));
      }
    }
    replace(box, ...parts);
  } catch (error) {
    replace(box, el('p', { class: 'error' }, error.message));
  }
}

function table(items) {
  const columns = [...new Set(items.slice(0, 50).flatMap((item) => (item && typeof item === 'object' ? Object.keys(item) : ['value'])))].slice(0, 8);
  return el('table', {}, el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col' }, c)))),
    el('tbody', {}, items.slice(0, 500).map((item) => el('tr', {}, columns.map((c) => el('td', {}, display(item && typeof item === 'object' ? item[c] : item)))))));
}
