// Search: the query language with errors shown at their position, a time range (relative
// or absolute), a histogram to drag-zoom, a results table with chosen columns, facets to
// filter by click, the event with its provenance and its surroundings, and export.
import { get, url, ApiError } from './api.js';
import { el, replace, field, activatable, formatTime, pick, display, queryValue } from './dom.js';
import { histogram, intervalFor, fillBuckets } from './charts.js';

const RANGES = [['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'], ['custom', 'Custom (from/to)']];
const DEFAULT_COLUMNS = '@timestamp,host.name,event.dataset,message';
const FACETS = ['event.dataset', 'host.name', 'event.outcome', 'user.name', 'source.ip'];
const PAGE = 100;

/** The search as the URL says it. */
function stateOf(params) {
  return {
    q: params.get('q') ?? '',
    range: params.get('range') ?? '24h',
    from: params.get('from') ?? '',
    to: params.get('to') ?? '',
    columns: params.get('columns') ?? DEFAULT_COLUMNS,
    order: params.get('order') === 'asc' ? 'asc' : 'desc',
  };
}

const UNIT_MS = { s: 1e3, m: 6e4, h: 36e5, d: 864e5 };

/** The search's time span in ms since the epoch, as far as the page can tell (`15m`,
 * RFC 3339, `now`, `now-2h`); `null` ends where it cannot. */
function spanOf(state) {
  const now = Date.now();
  const at = (text, fallback) => {
    if (!text) return fallback;
    if (text === 'now') return now;
    const relative = /^(?:now-)?(\d+)([smhd])$/.exec(text);
    if (relative) return now - Number(relative[1]) * UNIT_MS[relative[2]];
    const parsed = Date.parse(text);
    return Number.isNaN(parsed) ? null : parsed;
  };
  if (state.range !== 'custom') return [at(state.range, null), now];
  return [at(state.from, null), at(state.to, now)];
}

function searchParams(state) {
  const time = state.range === 'custom' ? { from: state.from, to: state.to } : { since: state.range };
  return { q: state.q, ...time, order: state.order };
}

function urlOf(state) {
  const params = new URLSearchParams();
  if (state.q) params.set('q', state.q);
  params.set('range', state.range);
  if (state.range === 'custom') {
    if (state.from) params.set('from', state.from);
    if (state.to) params.set('to', state.to);
  }
  if (state.columns !== DEFAULT_COLUMNS) params.set('columns', state.columns);
  if (state.order !== 'desc') params.set('order', state.order);
  return `/console/search?${params}`;
}

export async function render(main, params, { navigate, current: isCurrent }) {
  const state = stateOf(params);
  const q = el('input', { type: 'search', value: state.q, placeholder: 'event.outcome:failure AND source.ip:10.0.0.0/8', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'query-error' });
  q.value = state.q;
  const ranges = RANGES.some(([value]) => value === state.range) ? RANGES : [[state.range, `Last ${state.range}`], ...RANGES];
  const range = el('select', {}, ranges.map(([value, text]) => el('option', { value, selected: value === state.range }, text)));
  const from = el('input', { type: 'text', value: state.from, placeholder: '2026-11-25T08:00:00Z or now-2h' });
  const to = el('input', { type: 'text', value: state.to, placeholder: 'now' });
  const columns = el('input', { type: 'text', value: state.columns, size: 40 });
  const order = el('select', {}, el('option', { value: 'desc', selected: state.order === 'desc' }, 'Newest first'), el('option', { value: 'asc', selected: state.order === 'asc' }, 'Oldest first'));
  const custom = el('div', { class: 'row', hidden: state.range !== 'custom' }, field('from', 'From', from), field('to', 'To', to));
  range.addEventListener('change', () => { custom.hidden = range.value !== 'custom'; });

  const form = el('form', { id: 'search-form', role: 'search', class: 'panel' },
    el('div', { class: 'row' },
      el('div', { class: 'grow' }, el('label', { for: 'q' }, 'Query'), q),
      field('range', 'Time range', range),
      custom,
      field('columns', 'Columns', columns),
      field('order', 'Order', order),
      el('div', {}, el('button', { id: 'search-submit', type: 'submit' }, 'Search'))),
    el('div', { id: 'query-error', class: 'query-error', role: 'alert' }));
  q.id = 'q';

  const exportNdjson = el('a', { id: 'export-ndjson', download: 'yagura-export.ndjson' }, 'Export NDJSON');
  const exportCsv = el('a', { id: 'export-csv', download: 'yagura-export.csv' }, 'Export CSV');
  const count = el('p', { id: 'result-count', class: 'muted', 'aria-live': 'polite' });
  const chart = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  chart.id = 'histogram';
  const table = el('table', { id: 'results' });
  const more = el('button', { id: 'more', type: 'button', class: 'secondary', hidden: true }, 'More results');
  const facets = el('aside', { id: 'facets', class: 'facets panel', 'aria-label': 'Field values' });
  const detail = el('section', { id: 'event-detail', class: 'panel', hidden: true, 'aria-label': 'Event detail', tabindex: '-1' });

  main.append(el('h1', {}, 'Search'), form,
    el('div', { class: 'layout' }, facets,
      el('div', {},
        el('div', { class: 'panel' }, el('div', { class: 'row' }, el('div', { class: 'grow' }, count), exportNdjson, exportCsv), chart),
        detail,
        el('div', { class: 'panel' }, table, more))));

  const current = () => ({
    q: q.value.trim(), range: range.value, from: from.value.trim(), to: to.value.trim(),
    columns: columns.value.trim() || DEFAULT_COLUMNS, order: order.value,
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    navigate(urlOf(current()));
  });

  const wanted = state.columns.split(',').map((c) => c.trim()).filter(Boolean);
  let cursor = null;
  const addRows = (hits) => {
    for (const hit of hits) {
      const row = el('tr', { class: 'result-row', dataset: { id: pick(hit.event, 'event.id') || '' } },
        wanted.map((column) => el('td', {}, column === '@timestamp' ? formatTime(pick(hit.event, column)) : display(pick(hit.event, column)))));
      activatable(row, () => {
        for (const other of table.querySelectorAll('tr.selected')) other.classList.remove('selected');
        row.classList.add('selected');
        showEvent(detail, hit, state, navigate);
      });
      table.tBodies[0].append(row);
    }
  };

  const params0 = searchParams(state);
  exportNdjson.href = url('/api/v1/export', { ...params0, format: 'ndjson' });
  exportCsv.href = url('/api/v1/export', { ...params0, format: 'csv', fields: wanted.join(',') });
  count.textContent = 'Searching…';
  const started = performance.now();
  try {
    const [start, end] = spanOf(state);
    const interval = start !== null && end !== null && end > start ? intervalFor(end - start) : null;
    const histogramSpec = interval ? `date_histogram:@timestamp:${interval}` : 'date_histogram:@timestamp';
    const aggs = [histogramSpec, ...FACETS.map((f) => `terms:${f}:5`)].join(',');
    const found = await get('/api/v1/search', { ...params0, limit: PAGE, agg: aggs });
    if (!isCurrent()) return null;
    replace(table, el('thead', {}, el('tr', {}, wanted.map((c) => el('th', { scope: 'col' }, c)))), el('tbody'));
    addRows(found.hits);
    cursor = found.next_cursor || null;
    more.hidden = !cursor;
    const aggregations = found.aggregations || {};
    count.textContent = `${found.total.toLocaleString()} events (${Math.round(performance.now() - started)} ms)`;
    let buckets = (aggregations[histogramSpec] || {}).buckets || [];
    if (interval) buckets = fillBuckets(buckets, start, end, UNIT_MS[interval.slice(-1)] * Number(interval.slice(0, -1)));
    histogram(chart, buckets, {
      label: 'Matching events over time',
      onRange: (fromMs, toMs) => navigate(urlOf({ ...current(), range: 'custom', from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() })),
    });
    renderFacets(facets, aggregations, (name, value) => {
      const clause = `${name}:${queryValue(value)}`;
      navigate(urlOf({ ...current(), q: current().q ? `${current().q} AND ${clause}` : clause }));
    });
    main.dataset.state = 'ready';
  } catch (error) {
    if (!isCurrent()) return null;
    count.textContent = '';
    showQueryError(form.querySelector('#query-error'), error, state.q);
    main.dataset.state = 'error';
  }
  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const page = await get('/api/v1/search', { ...params0, limit: PAGE, after: cursor });
      addRows(page.hits);
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
    } catch (error) {
      count.textContent = `More results failed: ${error.message}`;
    } finally {
      more.disabled = false;
    }
  });
  return null;
}

function showQueryError(box, error, query) {
  if (!(error instanceof ApiError)) {
    replace(box, el('p', { class: 'error' }, error.message));
    return;
  }
  const problem = error.problem;
  const children = [el('p', { class: 'error', id: 'query-error-message' }, problem.detail || error.message)];
  if (problem.column) {
    const caret = `${' '.repeat(Math.max(0, problem.column - 1))}^${problem.expected ? ` expected ${problem.expected}` : ''}`;
    children.push(el('pre', { id: 'query-error-pointer' }, `${query}\n${caret}`));
  }
  replace(box, ...children);
}

function renderFacets(box, aggregations, onPick) {
  replace(box, el('h2', {}, 'Field values'));
  for (const name of FACETS) {
    const buckets = (aggregations[`terms:${name}:5`] || {}).buckets || [];
    if (!buckets.length) continue;
    box.append(el('h3', {}, name), el('ul', {}, buckets.map((b) => el('li', {},
      el('button', { type: 'button', class: 'facet-value', title: `Filter on ${name}`, onclick: () => onPick(name, b.key) }, display(b.key_as_string ?? b.key)),
      el('span', { class: 'count' }, b.doc_count.toLocaleString())))));
  }
}

async function showEvent(box, hit, state, navigate) {
  box.hidden = false;
  const id = pick(hit.event, 'event.id');
  const host = pick(hit.event, 'host.name');
  const time = pick(hit.event, '@timestamp');
  const provenance = el('pre', { id: 'event-provenance' }, 'Checking the signed batch…');
  const surrounding = el('button', { id: 'surrounding', type: 'button', class: 'secondary' }, 'Show surrounding events from this host');
  surrounding.addEventListener('click', () => {
    const at = new Date(time).getTime();
    navigate(`/console/search?${new URLSearchParams({
      q: host ? `host.name:${queryValue(host)}` : '', range: 'custom',
      from: new Date(at - 5 * 60_000).toISOString(), to: new Date(at + 5 * 60_000).toISOString(),
      ...(state.columns !== DEFAULT_COLUMNS ? { columns: state.columns } : {}),
    })}`);
  });
  const close = el('button', { type: 'button', class: 'secondary', onclick: () => { box.hidden = true; } }, 'Close');
  replace(box, el('div', { class: 'row' }, el('h2', { class: 'grow' }, 'Event'), surrounding, close),
    el('pre', { id: 'event-json' }, JSON.stringify(hit.event, null, 2)),
    el('h3', {}, 'Provenance'), provenance);
  box.focus();
  try {
    const checked = await get(`/api/v1/events/${encodeURIComponent(id)}/provenance`);
    provenance.textContent = JSON.stringify(checked, null, 2);
  } catch (error) {
    provenance.textContent = `${JSON.stringify(hit.provenance, null, 2)}\n(verification unavailable: ${error.message})`;
  }
}
