// docs/asyncapi.yaml, checked three ways (run by tests/test_asyncapi.py):
//   node tests/asyncapi.mjs DOC [FRAMES.jsonl]
// 1. the AsyncAPI parser validates the document (no diagnostic of severity error);
// 2. ajv validates each frame of FRAMES (one JSON frame the server sent per line) against the
//    payload of the server message of its `type`;
// 3. the TypeScript declarations (index.d.ts) name the same fields as the schemas.
// Prints one JSON line: {errors: [...], checked: N, types: [...]}; exits 1 on any error.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Parser, fromFile } from '@asyncapi/parser';
import Ajv from 'ajv';
import { load as loadYaml } from 'js-yaml';
import ts from 'typescript';

const [docPath, framesPath] = process.argv.slice(2);
const errors = [];

// 1. The document.
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, docPath).parse();
for (const d of diagnostics) {
  if (d.severity === 0) errors.push(`asyncapi: ${d.message} at ${d.path.join('.')}`);
}
if (!document) {
  console.log(JSON.stringify({ errors, checked: 0, types: [] }));
  process.exit(1);
}

// 2. The frames, by their `type`, against the server's messages (from the raw document, so
// that ajv sees the schemas as written, $refs and all).
const spec = loadYaml(readFileSync(docPath, 'utf8'));
const ajv = new Ajv({ allErrors: false, strict: false });
ajv.addSchema({ $id: 'doc', components: spec.components });
const sent = spec.operations.sendServerFrames.messages.map((m) => m.$ref.split('/').at(-1));
const validators = new Map();
for (const name of sent) {
  const payload = spec.components.messages[name].payload;
  const typeConst = payload.properties?.type?.const ?? spec.components.schemas.Event.properties.type.const;
  validators.set(typeConst, ajv.compile({ $ref: `doc#/components/messages/${name}/payload` }));
}
let checked = 0;
const types = new Set();
if (framesPath) {
  for (const line of readFileSync(framesPath, 'utf8').split('\n')) {
    if (!line) continue;
    const frame = JSON.parse(line);
    const validate = validators.get(frame.type);
    checked += 1;
    types.add(frame.type);
    if (!validate) errors.push(`no server message of type ${JSON.stringify(frame.type)}: ${line.slice(0, 300)}`);
    else if (!validate(frame)) errors.push(`${frame.type}: ${ajv.errorsText(validate.errors)}: ${line.slice(0, 300)}`);
  }
}

// 3. The declarations: the interfaces' fields are the schemas' properties.
const here = dirname(fileURLToPath(import.meta.url));
const source = ts.createSourceFile('index.d.ts', readFileSync(join(here, '..', 'index.d.ts'), 'utf8'), ts.ScriptTarget.ES2022);
const declared = new Map();
const unions = new Map();
source.forEachChild((node) => {
  if (ts.isInterfaceDeclaration(node)) {
    const names = node.members.filter((m) => m.name && ts.isIdentifier(m.name)).map((m) => m.name.text);
    declared.set(node.name.text, names.sort());
  } else if (ts.isTypeAliasDeclaration(node) && ts.isUnionTypeNode(node.type)) {
    const literals = node.type.types.filter((t) => ts.isLiteralTypeNode(t) && ts.isStringLiteral(t.literal));
    unions.set(node.name.text, literals.map((t) => t.literal.text).sort());
  }
});
const schemas = spec.components.schemas;
const agree = [
  ['Run', schemas.Run.properties],
  ['Step', schemas.Step.properties],
  ['InputRequest', schemas.InputRequest.properties],
  ['RunEvent', schemas.Event.properties],
  ['Workflow', schemas.Workflow.properties],
  ['Schedule', schemas.Schedule.properties],
];
for (const [name, properties] of agree) {
  const want = Object.keys(properties).sort();
  const have = declared.get(name) ?? [];
  if (JSON.stringify(want) !== JSON.stringify(have)) {
    errors.push(`index.d.ts ${name} has [${have}], docs/asyncapi.yaml says [${want}]`);
  }
}
const statuses = [...schemas.RunStatus.enum].sort();
if (JSON.stringify(unions.get('RunStatus')) !== JSON.stringify(statuses)) {
  errors.push(`index.d.ts RunStatus is [${unions.get('RunStatus')}], docs/asyncapi.yaml says [${statuses}]`);
}

console.log(JSON.stringify({ errors, checked, types: [...types].sort() }));
process.exit(errors.length ? 1 : 0);
