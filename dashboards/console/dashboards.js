// Dashboards: JSON files of panels (a time series of a query, the top values of a field,
// a single number, a table), each panel one search with its aggregation.
import { get } from './api.js';
import { el, replace, field, formatTime, pick, display, queryValue } from './dom.js';
import { timeseries, barList, intervalFor, fillBuckets } from './charts.js';

const UNIT_MS = { s: 1e3, m: 6e4, h: 36e5, d: 864e5 };
const ms = (text) => Number(text.slice(0, -1)) * UNIT_MS[text.slice(-1)];

const RANGES = ['15m', '1h', '24h', '7d', '30d'];

export async function render(main, params, { navigate, rest, current: isCurrent }) {
  if (!rest) {
    const { dashboards } = await get('/api/v1/dashboards');
    if (!isCurrent()) return null;
    main.append(el('h1', {}, 'Dashboards'), el('ul', { id: 'dashboard-list' },
      dashboards.map((d) => el('li', {}, el('a', { href: `/console/dashboards/${encodeURIComponent(d.id)}` }, d.title), d.description ? ` — ${d.description}` : ''))));
    main.dataset.state = 'ready';
    return null;
  }
  const dashboard = await get(`/api/v1/dashboards/${encodeURIComponent(rest)}`);
  if (!isCurrent()) return null;
  const range = params.get('range') || dashboard.time_range || '24h';
  const picker = el('select', {}, [...new Set([...RANGES, range])].map((r) => el('option', { value: r, selected: r === range }, r)));
  picker.addEventListener('change', () => navigate(`/console/dashboards/${encodeURIComponent(rest)}?range=${picker.value}`, { replace: true }));
  const grid = el('div', { id: 'dashboard', class: 'grid' });
  main.append(el('div', { class: 'row' }, el('h1', { class: 'grow' }, dashboard.title), field('dashboard-range', 'Time range', picker)),
    dashboard.description ? el('p', { class: 'muted' }, dashboard.description) : null, grid);
  const panels = dashboard.panels.map((panel) => {
    const body = el('div', { class: 'panel-body' });
    const box = el('section', { class: 'panel dash-panel', dataset: { type: panel.type, state: 'loading' }, 'aria-label': panel.title },
      el('h2', {}, panel.title), body);
    grid.append(box);
    return drawPanel(panel, range, body, navigate).then(() => { box.dataset.state = 'ready'; }, (error) => {
      box.dataset.state = 'error';
      replace(body, el('p', { class: 'error' }, error.message));
    });
  });
  await Promise.all(panels);
  main.dataset.state = 'ready';
  return null;
}

/** The buckets of aggregation `spec` (a search that matched nothing has none). */
function bucketsOf(found, spec) {
  return ((found.aggregations || {})[spec] || {}).buckets || [];
}

async function drawPanel(panel, since, body, navigate) {
  const base = { q: panel.query || '', since };
  switch (panel.type) {
    case 'timeseries': {
      const end = Date.now();
      const start = end - ms(since);
      const interval = intervalFor(end - start);
      const spec = `date_histogram:@timestamp:${interval}`;
      const found = await get('/api/v1/search', { ...base, limit: 1, agg: spec });
      const chart = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      const total = el('p', { class: 'muted' }, `${found.total.toLocaleString()} events`);
      replace(body, chart, total);
      timeseries(chart, fillBuckets(bucketsOf(found, spec), start, end, ms(interval)), { label: panel.title });
      return;
    }
    case 'top': {
      const spec = `terms:${panel.field}:${panel.size || 10}`;
      const found = await get('/api/v1/search', { ...base, limit: 1, agg: spec });
      const buckets = bucketsOf(found, spec);
      if (buckets.length) {
        barList(body, buckets, {
          label: panel.title,
          onPick: (key) => navigate(`/console/search?${new URLSearchParams({ q: `${panel.query && panel.query !== '*' ? `(${panel.query}) AND ` : ''}${panel.field}:${queryValue(key)}`, range: since })}`),
        });
      } else {
        replace(body, el('p', { class: 'muted' }, 'No values in this range'));
      }
      return;
    }
    case 'number': {
      const found = await get('/api/v1/search', { ...base, limit: 1 });
      replace(body, el('div', { class: 'big-number' }, found.total.toLocaleString()));
      return;
    }
    case 'table': {
      const columns = panel.columns || ['@timestamp', 'message'];
      const found = await get('/api/v1/search', { ...base, limit: panel.size || 10 });
      replace(body, el('table', {},
        el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col' }, c)))),
        el('tbody', {}, found.hits.map((hit) => el('tr', {}, columns.map((c) => el('td', {}, c === '@timestamp' ? formatTime(pick(hit.event, c)) : display(pick(hit.event, c)))))))));
      if (!found.hits.length) body.append(el('p', { class: 'muted' }, 'No events in this range'));
      return;
    }
    default:
      throw new Error(`unknown panel type ${panel.type}`);
  }
}
