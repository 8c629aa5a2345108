// Node chat-completions clients through codex-shield on a Responses-only upstream.
//
// Run by tests/e2e/chatclients.sh (copied next to the pinned node_modules) with PROXY_URL (the
// proxy's /v1, started with UPSTREAM_API=responses-only in front of tests/e2e/responses_mock.py,
// which answers every new turn with a 429 and a cut stream before the real answer) and one
// argument, the client:
//   openai  openai-node's chat.completions: create streamed and not, a tool round trip with
//           create and with the stream helper (chat.completions.stream, finalChatCompletion);
//   vercel  the Vercel AI SDK's openai.chat(...) model: generateText and streamText, text and
//           a tool round trip (the SDK runs the tool and asks again: stopWhen 3 steps).
// Every client's own retries are off: each fault must be absorbed by the proxy.
// Prints one line per check and "N passed, N failed"; exits 1 on any failure.

const MODEL = "gpt-5.1-codex";
const PLAIN = "PLAIN-ANSWER-4711: the Responses-only mock answered.";
const WEATHER_OUT = "18C and sunny in Paris";
const FINAL = "FINAL-ANSWER: " + WEATHER_OUT;
const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather of a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    },
  },
};

const client = process.argv[2];
let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${client}: ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${client}: ${name}`);
    console.log(e && e.stack ? e.stack : String(e));
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(typeof what === "string" ? what : JSON.stringify(what));
}

async function openaiChecks() {
  const { default: OpenAI } = await import("openai");
  const chat = new OpenAI({
    baseURL: process.env.PROXY_URL,
    apiKey: "client-placeholder",
    maxRetries: 0,
    timeout: 60000,
  }).chat.completions;

  await check("chat.completions.create, not streamed: text", async () => {
    const r = await chat.create({ model: MODEL, messages: [{ role: "user", content: "[node-create] hi" }] });
    expect(r.choices[0].message.content === PLAIN, r);
    expect(r.choices[0].finish_reason === "stop", r.choices[0].finish_reason);
  });
  await check("chat.completions.create, streamed: text", async () => {
    const stream = await chat.create({
      model: MODEL,
      messages: [{ role: "user", content: "[node-stream] hi" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish = null;
    for await (const c of stream) {
      for (const choice of c.choices) {
        text += choice.delta.content || "";
        finish = choice.finish_reason || finish;
      }
    }
    expect(text === PLAIN, text);
    expect(finish === "stop", finish);
  });
  const byCreate = async (messages) => {
    const r = await chat.create({ model: MODEL, messages, tools: [WEATHER] });
    return r.choices[0];
  };
  const byStreamHelper = async (messages) => {
    const r = await chat.stream({ model: MODEL, messages, tools: [WEATHER] }).finalChatCompletion();
    return r.choices[0];
  };
  for (const [label, first] of [["create", byCreate], ["chat.completions.stream helper", byStreamHelper]]) {
    await check(`tool round trip, ${label}`, async () => {
      const messages = [{ role: "user", content: `[node-tools-${label}] weather in Paris?` }];
      const choice = await first(messages);
      expect(choice.finish_reason === "tool_calls", choice);
      const calls = choice.message.tool_calls || [];
      expect(calls.length === 1 && calls[0].function.name === "get_weather", choice.message);
      expect(JSON.parse(calls[0].function.arguments).city === "Paris", calls[0].function.arguments);
      messages.push(
        { role: "assistant", content: choice.message.content ?? null, tool_calls: calls },
        { role: "tool", tool_call_id: calls[0].id, content: WEATHER_OUT },
      );
      const r = await chat.create({ model: MODEL, messages, tools: [WEATHER] });
      expect(r.choices[0].message.content === FINAL, r.choices[0].message);
    });
  }
}

async function vercelChecks() {
  const { generateText, streamText, tool, isStepCount } = await import("ai");
  const { createOpenAI } = await import("@ai-sdk/openai");
  const { z } = await import("zod");
  const openai = createOpenAI({ baseURL: process.env.PROXY_URL, apiKey: "client-placeholder" });
  const model = openai.chat(MODEL);
  const ran = [];
  const tools = {
    get_weather: tool({
      description: "Weather of a city.",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        ran.push(city);
        return WEATHER_OUT;
      },
    }),
  };
  const common = { model, maxRetries: 0 };

  await check("generateText: text", async () => {
    const r = await generateText({ ...common, prompt: "[vercel-generate] hi" });
    expect(r.text === PLAIN, r.text);
    expect(r.finishReason === "stop", r.finishReason);
  });
  await check("streamText: text", async () => {
    const r = streamText({ ...common, prompt: "[vercel-stream] hi" });
    const text = await r.text;
    expect(text === PLAIN, text);
  });
  const toolCheck = async (label, run) => {
    await check(`${label}: tool round trip`, async () => {
      ran.length = 0;
      const { text, steps } = await run({
        ...common,
        tools,
        stopWhen: isStepCount(3),
        prompt: `[vercel-tools-${label}] weather in Paris?`,
      });
      expect(text === FINAL, text);
      expect(steps.length === 2, `steps: ${steps.length}`);
      const calls = steps[0].toolCalls;
      expect(calls.length === 1 && calls[0].toolName === "get_weather" && calls[0].input.city === "Paris", calls);
      expect(ran.length === 1 && ran[0] === "Paris", ran);
    });
  };
  await toolCheck("generateText", (o) => generateText(o));
  await toolCheck("streamText", async (o) => {
    const r = streamText(o);
    return { text: await r.text, steps: await r.steps };
  });
}

const checks = { openai: openaiChecks, vercel: vercelChecks }[client];
if (!checks) {
  console.log(`unknown client ${client}`);
  process.exit(2);
}
await checks();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
