import { it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { startMesh } from '../harness/mesh.js';

it('scratch', async () => {
  const mesh = await startMesh({ replicas: 1 });
  try {
    const base = `http://127.0.0.1:${mesh.router.info.restPort}`;
    const script = `
import json, sys, urllib.request, urllib.error
body = json.dumps({"instances": [[0.123456] * 1000000]}).encode()
for i in range(3):
    try:
        urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/v1/models/m:predict", data=body), timeout=10)
    except urllib.error.HTTPError as e:
        print(e.code, e.read())
    except Exception as e:
        print("EXC", repr(e))
`;
    console.log(execFileSync('/usr/bin/python3', ['-c', script, base], { encoding: 'utf8' }));
    for (let i = 0; i < 3; i++) {
      const r = await fetch(base + '/v1/models/m:predict', { method: 'POST', body: JSON.stringify({ instances: [Array(1_000_000).fill(0.123456)] }) });
      console.log('fetch', r.status, await r.text());
    }
    const r = await fetch(base + '/v2/health/ready');
    console.log(r.status);
  } finally { await mesh.stop(); }
});
