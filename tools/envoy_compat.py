#!/usr/bin/python3
"""Prints docs/envoy-compat.md: every Envoy field, filter and extension petrel supports,
supports in part, or rejects, derived from the code so the page cannot drift from it.

    tools/envoy_compat.py > docs/envoy-compat.md      (tests/integration/test_envoy_compat_doc.py
                                                       checks the committed page is this output)

Where each answer comes from:
  * The messages and their fields: proxy/proto_schema_tables.c, petrel's copy of the schema of
    Envoy's API (scripts/gen_proto_schema.py). The messages listed are those a config reaches
    from the resources petrel loads (Bootstrap, Listener, Cluster, RouteConfiguration,
    ClusterLoadAssignment, Secret) and from the typed_config types petrel registers, through
    fields petrel does not reject.
  * Rejected: a field named in one of the parsers' "not supported" lists
    (`static const char *const ..._unsupported[]` in proxy/, filters/, discovery/, tls/), each
    list attributed to the message(s) whose fields it names; or a field no parser reads (its
    name appears in no parser), which the config reader reports the same way. The error is
    "<path>: field is not supported".
  * Supported: a field a parser reads (its name is a string in the parsers) and no list
    rejects. A field with a note in tools/envoy_compat_notes.json is "partial": the note says
    what is missing.
  * Filters and extensions: the names petrel registers (`.name = "envoy..."` with their
    `.type_url`) and the extension names its parsers accept.
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ('proxy', 'filters', 'discovery', 'tls')
SCHEMA = os.path.join('proxy', 'proto_schema_tables.c')
NOTES = os.path.join('tools', 'envoy_compat_notes.json')
ROOT_MESSAGES = ('envoy.config.bootstrap.v3.Bootstrap', 'envoy.config.listener.v3.Listener',
                 'envoy.config.cluster.v3.Cluster', 'envoy.config.route.v3.RouteConfiguration',
                 'envoy.config.endpoint.v3.ClusterLoadAssignment',
                 'envoy.extensions.transport_sockets.tls.v3.Secret')
REJECTED = 'field is not supported'


def read(rel):
    with open(os.path.join(ROOT, rel), encoding='utf-8') as f:
        return f.read()


def joined(text):
    """text with string macros expanded and adjacent literals joined, as the C compiler sees
    them ("type.googleapis.com/envoy.extensions.transport_sockets.tls" ".v3.UpstreamTlsContext"
    is one name)."""
    macros = dict(re.findall(r'#define (\w+)\s+((?:"[^"\n]*"\s*)+)\n', text))
    for name, value in macros.items():
        text = re.sub(r'(?<!#define )\b%s\b(?=\s*[")])' % name, lambda _m, v=value: v.strip(),
                      text)
    prev = None
    while prev != text:
        prev = text
        text = re.sub(r'"([^"\n]*)"\s+"([^"\n]*)"', r'"\1\2"', text)
    return text


def sources():
    """(path, text) of every parser source, the generated schema left out."""
    out = []
    for d in SOURCE_DIRS:
        for name in sorted(os.listdir(os.path.join(ROOT, d))):
            rel = os.path.join(d, name)
            if name.endswith('.c') and rel != SCHEMA:
                out.append((rel, joined(read(rel))))
    return out


def parse_schema(text):
    """{full_name: [(field, type, message_var or None, repeated)]}, {var: full_name}."""
    fields_of = {}
    for m in re.finditer(r'static const pt_pb_field_t (\w+)_fields\[\] = \{(.*?)\n\};', text,
                         re.S):
        rows = []
        for f in re.finditer(r'\{\.name = "(\w+)", \.number = \d+, \.type = (\w+)(.*?)\},',
                             m.group(2)):
            msg = re.search(r'\.message = &(\w+)', f.group(3))
            rows.append((f.group(1), f.group(2), msg.group(1) if msg else None,
                         'PT_PB_REPEATED' in f.group(3)))
        fields_of[m.group(1)] = rows
    names = {}
    for m in re.finditer(r'static const pt_pb_message_t (\w+) = \{\s*\.full_name = "([\w.]+)"',
                         text):
        names[m.group(1)] = m.group(2)
    messages = {names[var]: rows for var, rows in fields_of.items() if var in names}
    return messages, names


def unsupported_lists(srcs):
    """Every `..._unsupported[]` (and `unsupported[]`) list: (file, names)."""
    out = []
    rx = re.compile(r'static const char \*const (\w*unsupported\w*)\[\] = \{(.*?)\};', re.S)
    for rel, text in srcs:
        for m in rx.finditer(text):
            if m.group(1) == 'unsupported_ops' or m.group(1) == 'unsupported_types':
                continue
            names = re.findall(r'"([\w.]+)"', m.group(2))
            if names:
                out.append((rel, names))
    return out


def attribute(lists, messages):
    """{message: {field}} rejected by a list: a list belongs to the messages with the most of
    its names among their fields (a list may name fields newer than the schema)."""
    rejected = {}
    field_sets = {name: {f[0] for f in rows} for name, rows in messages.items()}
    for rel, names in lists:
        best, score = [], 0
        for msg, fs in field_sets.items():
            hit = sum(1 for n in names if n in fs)
            if hit > score:
                best, score = [msg], hit
            elif hit == score and hit > 0:
                best.append(msg)
        if score == 0 or score * 3 < len(names) * 2:
            continue  # not a list of fields of any one message (enum names, operators)
        # Several messages sharing every listed name (Http1ProtocolOptions up and down):
        # the list rejects the same fields in each.
        for msg in best:
            rejected.setdefault(msg, set()).update(names)
    return rejected


def literals(srcs):
    """Every string literal in the parsers (what a getter can be asked for by name), the
    "not supported" lists left out (naming a field there is not reading it)."""
    out = set()
    for _, text in srcs:
        text = re.sub(r'static const char \*const \w*(?:unsupported|known)\w*\[\] = \{.*?\};', '',
                      text, flags=re.S)
        out.update(re.findall(r'"([a-z_][a-z0-9_]*)"', text))
        # Names composed at run time ("%s_headers_to_remove"): kept as their suffix.
        out.update('*' + m for m in re.findall(r'"%s(_[a-z0-9_]+)"', text))
    return out


def value_limits(srcs):
    """{field: error} for fields a parser reads and then refuses some values of, e.g.
    pt_cfg_error(r, "track_per_rule_stats", "true is not supported")."""
    out = {}
    for _, text in srcs:
        for m in re.finditer(r'pt_cfg_error\(\s*\w+,\s*"([a-z_0-9]+)",\s*"([^"]*not supported[^"]*)"',
                             text):
            out.setdefault(m.group(1), m.group(2))
    return out


def is_read(name, read_names):
    return name in read_names or any(name.endswith(n[1:]) for n in read_names
                                     if n.startswith('*'))


def type_urls(srcs):
    out = set()
    for _, text in srcs:
        out.update(re.findall(r'type\.googleapis\.com/"?\s*"?([\w.]+)"', text))
    return out


def extensions(srcs):
    """[(name, config type, status)] of the filters and extensions: the names petrel
    registers (`.name` with `.type_url`), the extension names its parsers accept, and the
    typed_config types they know (those in an `unsupported_types` list are rejected)."""
    by_type, names = {}, {}
    refused = set()
    for rel, text in srcs:
        for m in re.finditer(r'static const char \*const \w*unsupported_types\[\] = \{(.*?)\};',
                             text, re.S):
            refused.update(re.findall(r'"(?:type\.googleapis\.com/)?([\w.]+)"', m.group(1)))
        for m in re.finditer(r'\.name = "(envoy\.[\w.]+)",\s*\.type_url\s*=\s*((?:"[^"]*"\s*)+)',
                             text):
            url = ''.join(re.findall(r'"([^"]*)"', m.group(2)))
            names[m.group(1)] = url.replace('type.googleapis.com/', '')
        for m in re.finditer(r'"(envoy\.(?:filters\.(?:listener|network|http)|access_loggers|'
                             r'transport_sockets|resource_monitors|compression|health_checkers|'
                             r'network\.dns_resolver|cluster|clusters|load_balancing_policies|'
                             r'upstreams\.http|retry_host_predicates|retry_priorities)\.'
                             r'[a-z0-9_.]+)"', text):
            names.setdefault(m.group(1), '')
        for m in re.finditer(r'(envoy\.extensions\.[\w.]+\.v3\.[A-Z]\w*)"', text):
            by_type.setdefault(m.group(1), None)
    rows = []
    typed = set(names.values())
    for name, url in names.items():
        rows.append((name, url, 'supported'))
    for t in by_type:
        if t not in typed:
            rows.append(('', t, 'rejected' if t in refused else 'supported'))
    return sorted(rows, key=lambda r: (r[0] == '', r[0] or r[1]))


def md_escape(s):
    return s.replace('|', '\\|')


def main():
    srcs = sources()
    messages, _ = parse_schema(read(SCHEMA))
    rejected = attribute(unsupported_lists(srcs), messages)
    read_names = literals(srcs)
    notes = json.loads(read(NOTES))
    field_notes = notes.get('fields', {})
    ext_notes = notes.get('extensions', {})
    # Statuses the static reading gets wrong (a one-name list shared by several messages),
    # checked against the binary by tests/integration/test_envoy_compat_doc.py.
    overrides = notes.get('status_overrides', {})

    # Messages a config reaches through fields petrel does not reject.
    var_of = {}
    for m in re.finditer(r'static const pt_pb_message_t (\w+) = \{\s*\.full_name = "([\w.]+)"',
                         read(SCHEMA)):
        var_of[m.group(1)] = m.group(2)
    roots = [r for r in ROOT_MESSAGES if r in messages]
    roots += sorted(u for u in type_urls(srcs) if u in messages and u not in roots)
    seen, order, queue = set(), [], list(roots)
    status_of = {}
    while queue:
        msg = queue.pop(0)
        if msg in seen:
            continue
        seen.add(msg)
        order.append(msg)
        for name, _typ, sub, _rep in messages[msg]:
            key = '%s.%s' % (msg, name)
            if key in overrides:
                st = overrides[key]
            elif key in field_notes and is_read(name, read_names):
                st = 'partial'  # read somewhere, with what is missing in the note
            elif name in rejected.get(msg, ()) or not is_read(name, read_names):
                st = 'rejected'
            else:
                st = 'supported'
            status_of[key] = st
            target = var_of.get(sub) if sub else None
            if st != 'rejected' and target in messages and target not in seen:
                queue.append(target)
        # Fields a list rejects that the schema (an older Envoy) does not have yet.
        for name in sorted(rejected.get(msg, ())):
            key = '%s.%s' % (msg, name)
            if all(name != f[0] for f in messages[msg]):
                status_of[key] = 'partial' if key in field_notes and name in read_names \
                    else 'rejected'

    # Fields petrel reads that are newer than its schema, with their note.
    for key in notes.get('extra_fields', {}):
        if key.rsplit('.', 1)[0] in seen:
            status_of[key] = 'supported'
            field_notes[key] = notes['extra_fields'][key]

    # A field read and then refused for some values is partial, its error the note, when
    # only one message a config reaches has a field of that name (else the error's owner is
    # unknown).
    limits = value_limits(srcs)
    owners = {}
    for key in status_of:
        owners.setdefault(key.rsplit('.', 1)[1], []).append(key)
    for name, err in sorted(limits.items()):
        keys = owners.get(name, [])
        if len(keys) == 1 and status_of[keys[0]] == 'supported' and keys[0] not in field_notes:
            status_of[keys[0]] = 'partial'
            field_notes[keys[0]] = 'some values are refused: `%s: %s`' % (name, err)

    counts = {'supported': 0, 'partial': 0, 'rejected': 0}
    for st in status_of.values():
        counts[st] += 1

    out = []
    w = out.append
    w('# Envoy compatibility')
    w('')
    w('<!-- Generated by tools/envoy_compat.py from the code: do not edit. Notes on partial')
    w('     support live in tools/envoy_compat_notes.json. -->')
    w('')
    w('Every field of the Envoy v3 messages a petrel config reaches, and every filter and '
      'extension, with what petrel does with it:')
    w('')
    w('* **supported**: read and honoured as Envoy does '
      '([configuration.md](configuration.md) has the details and limits of each);')
    w('* **partial**: read, with what is missing in the note;')
    w('* **rejected**: a config that sets it fails with `<path>: %s` (a dynamic update '
      'is refused), never ignored. Fields of a rejected message are not listed.' % REJECTED)
    w('')
    w('The lists come from the code (the schema petrel carries and its parsers), so this page '
      'says what the build does. %d fields supported, %d partial, %d rejected, in %d messages.'
      % (counts['supported'], counts['partial'], counts['rejected'], len(order)))
    w('')
    w('## Filters and extensions')
    w('')
    w('| Name | Config type | Status | Notes |')
    w('|---|---|---|---|')
    for name, url, st in extensions(srcs):
        note = ext_notes.get(name or url, '')
        if st == 'supported' and note:
            st = 'partial'
        elif st == 'rejected' and not note:
            note = '`@type "..." is not supported`'
        w('| %s | %s | %s | %s |' % ('`%s`' % name if name else '', '`%s`' % url if url else '',
                                      st, md_escape(note)))
    other = notes.get('other_extensions', '')
    if other:
        w('| any other | | rejected | %s |' % md_escape(other))
    w('')
    w('## Fields')
    w('')
    w('| Message | Field | Status | Notes |')
    w('|---|---|---|---|')
    for msg in order:
        names = [f[0] for f in messages[msg]]
        extra = sorted(k.split('.')[-1] for k in status_of
                       if k.rsplit('.', 1)[0] == msg and k.split('.')[-1] not in names)
        for name in names + extra:
            key = '%s.%s' % (msg, name)
            st = status_of[key]
            note = field_notes.get(key, '')
            if st == 'rejected' and not note:
                note = '`%s`' % REJECTED
            w('| `%s` | `%s` | %s | %s |' % (msg, name, st, md_escape(note)))
    sys.stdout.write('\n'.join(out) + '\n')


if __name__ == '__main__':
    main()
