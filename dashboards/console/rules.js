// Rules: what the live detector runs — level, tags, hits over time — the files it left
// out or refused with file:line, and each rule file's fixtures and their last result.
import { get } from './api.js';
import { el, replace, activatable, formatTime } from './dom.js';
import { histogram } from './charts.js';

export async function render(main, params, { navigate, rest, current: isCurrent }) {
  const catalog = await get('/api/v1/rules');
  if (!isCurrent()) return null;
  const problems = [];
  if (catalog.refused) {
    problems.push(el('p', {}, `Refused at ${formatTime(catalog.refused.at)} (the previous rules still run):`),
      el('ul', {}, catalog.refused.problems.map((p) => el('li', {}, el('code', {}, p)))));
  }
  if (catalog.errors.length) {
    problems.push(el('p', {}, 'Files left out:'),
      el('ul', {}, catalog.errors.map((p) => el('li', {}, el('code', {}, `${p.file}:${p.line}: ${p.message}`)))));
  }
  const detail = el('section', { id: 'rule-detail', class: 'panel', hidden: true, tabindex: '-1', 'aria-label': 'Rule detail' });
  const body = el('tbody');
  for (const rule of catalog.rules) {
    const test = rule.test ? (rule.test.passed ? 'passed' : 'failed') : 'no fixtures';
    body.append(activatable(el('tr', { class: 'rule-row', dataset: { id: rule.id || rule.title } },
      el('td', {}, rule.title),
      el('td', {}, el('span', { class: `badge level-${rule.level || 'none'}` }, rule.level || '')),
      el('td', {}, rule.kind),
      el('td', {}, (rule.tags || []).join(' ')),
      el('td', {}, String(rule.hits_24h)),
      el('td', {}, el('span', { class: `badge ${test === 'passed' ? 'ok' : test === 'failed' ? 'bad' : ''}` }, test)),
      el('td', {}, rule.file)),
    () => navigate(`/console/rules/${encodeURIComponent(rule.id || rule.title)}`)));
  }
  main.append(el('h1', {}, 'Rules'),
    el('p', { class: 'muted' }, `${catalog.rules.length} rules loaded ${formatTime(catalog.loaded_at)} from ${catalog.dirs.join(', ')}`),
    el('section', { id: 'rule-errors', class: problems.length ? 'panel notice' : '', 'aria-label': 'Load errors' }, problems),
    detail,
    el('div', { class: 'panel' }, el('table', { id: 'rules' },
      el('thead', {}, el('tr', {}, ['Title', 'Level', 'Kind', 'Tags', 'Hits (24 h)', 'Fixtures', 'File'].map((h) => el('th', { scope: 'col' }, h)))),
      body)));
  main.dataset.state = 'ready';
  const chosen = catalog.rules.find((r) => (r.id || r.title) === rest);
  if (chosen) showRule(detail, chosen);
  return null;
}

async function showRule(box, rule) {
  box.hidden = false;
  const chart = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  chart.id = 'rule-hits';
  const test = rule.test;
  replace(box, el('h2', {}, rule.title),
    rule.description ? el('p', {}, rule.description) : null,
    el('p', { class: 'muted' }, `${rule.id || 'no id'} · ${rule.kind} · ${rule.status || ''} · ${rule.file}`),
    el('h3', {}, 'Matches over the last 7 days'), chart,
    el('h3', {}, 'Fixtures'),
    test ? el('div', {},
      el('p', {}, `Last test: ${test.passed ? 'passed' : 'FAILED'} at ${formatTime(test.at)}`),
      el('ul', {},
        el('li', {}, 'must match: ', el('code', {}, test.matching), ` — ${test.matching_result}`),
        el('li', {}, 'must not match: ', el('code', {}, test.not_matching), ` — ${test.not_matching_result}`)))
      : el('p', { class: 'muted' }, 'This rule file has no fixtures.'));
  box.focus();
  try {
    const hits = await get(`/api/v1/rules/${encodeURIComponent(rule.id || rule.title)}/hits`, { since: '7d' });
    histogram(chart, hits.buckets, { label: `Matches of ${rule.title}` });
  } catch (error) {
    chart.replaceWith(el('p', { class: 'error' }, error.message));
  }
}
