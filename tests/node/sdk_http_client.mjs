// The official TypeScript SDK client over Streamable HTTP: lists the tools, submits a task,
// reads it back, and prints what it saw as one JSON line. Usage: node sdk_http_client.mjs URL TOKEN
// The SDK lives in the git-ignored .npm-deps/ that scripts/npm-deps fills (OFFLOAD_NPM_DEPS).
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const sdk = join(process.env.OFFLOAD_NPM_DEPS, "node_modules/@modelcontextprotocol/sdk/dist/esm");
const { Client } = await import(pathToFileURL(join(sdk, "client/index.js")));
const { StreamableHTTPClientTransport } = await import(
  pathToFileURL(join(sdk, "client/streamableHttp.js"))
);

const [url, token] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "offload-ts-test", version: "1.0.0" });
await client.connect(transport);
const tools = await client.listTools();
const submitted = await client.callTool({ name: "submit_task", arguments: { command: "echo from-ts" } });
const info = await client.callTool({
  name: "get_task",
  arguments: { task_id: submitted.structuredContent.task_id },
});
console.log(JSON.stringify({
  tools: tools.tools.map((t) => t.name).sort(),
  submitted: submitted.structuredContent,
  info: info.structuredContent,
}));
await client.close();
