// Drives the real Node clients of the OpenAI-compatible face (/v1) for tests/clients/test_openai_node.py:
// the `openai` npm client and the Vercel AI SDK (`ai` + `@ai-sdk/openai-compatible`). One process serves
// every case of the test module: a JSON line per call on stdin ({id, case, args}), a JSON line per answer
// on stdout ({id, ok, result} or {id, ok: false, error}). No protocol is written here: only the SDKs speak.
//
// Environment: XENIOS_BASE_URL (the API, without /v1), XENIOS_JWT (the user's token: the SDKs' apiKey),
// XENIOS_API_KEY (the service key: a default header).

import { createInterface } from "node:readline";

import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject, generateText, streamText } from "ai";
import OpenAI from "openai";
import { z } from "zod";

const baseURL = `${process.env.XENIOS_BASE_URL}/v1`;
const headers = { "X-API-Key": process.env.XENIOS_API_KEY };

function openai(args = {}) {
  return new OpenAI({
    baseURL,
    apiKey: args.jwt ?? process.env.XENIOS_JWT,
    defaultHeaders: args.headers ?? headers,
    maxRetries: 0,
    timeout: 20_000,
  });
}

function provider(args = {}) {
  return createOpenAICompatible({
    name: "xenios",
    baseURL,
    apiKey: args.jwt ?? process.env.XENIOS_JWT,
    headers: args.headers ?? headers,
    includeUsage: true,
    supportsStructuredOutputs: true,
  });
}

function sdkError(error) {
  return {
    name: error?.constructor?.name,
    message: String(error?.message ?? error),
    status: error?.status ?? error?.statusCode ?? null,
    code: error?.code ?? error?.error?.code ?? null,
    param: error?.param ?? error?.error?.param ?? null,
    type: error?.type ?? error?.error?.type ?? null,
    data: error?.data ?? null,
  };
}

const pick = (h, ...names) => Object.fromEntries(names.map((n) => [n, h?.get ? h.get(n) : h?.[n] ?? null]));

const Intent = z.object({
  intent: z.string(),
  confidence: z.number(),
  alternatives: z.array(z.object({ intent: z.string(), confidence: z.number() })),
});

const cases = {
  // -- openai (npm) ------------------------------------------------------------------------------
  async "openai.models"() {
    const list = await openai().models.list();
    const ids = [];
    for await (const model of list) ids.push(model.id);
    const chat = await openai().models.retrieve("chat");
    return { ids, chat };
  },
  async "openai.create"(args) {
    const { data, response, request_id } = await openai(args)
      .chat.completions.create({ model: args.model ?? "chat", messages: args.messages, ...args.params })
      .withResponse();
    return {
      completion: data,
      request_id,
      headers: pick(response.headers, "x-xenios-model", "x-xenios-fallback-used", "x-request-id"),
    };
  },
  async "openai.stream"(args) {
    const stream = await openai(args).chat.completions.create({
      model: args.model ?? "chat",
      messages: args.messages,
      stream: true,
      stream_options: { include_usage: true },
      ...args.params,
    });
    const chunks = [];
    let text = "";
    try {
      for await (const chunk of stream) {
        chunks.push(chunk);
        text += chunk.choices[0]?.delta?.content ?? "";
      }
    } catch (error) {
      return { text, chunks, error: sdkError(error) };
    }
    return { text, chunks, error: null };
  },
  async "openai.error"(args) {
    try {
      await openai(args).chat.completions.create({ model: args.model ?? "chat", messages: args.messages, ...args.params });
    } catch (error) {
      return { isAPIError: error instanceof OpenAI.APIError, ...sdkError(error) };
    }
    throw new Error("the request succeeded");
  },

  // -- Vercel AI SDK ---------------------------------------------------------------------------
  async "ai.generateText"(args) {
    try {
      const result = await generateText({
        model: provider(args).chatModel(args.model ?? "chat"),
        messages: args.messages,
        maxRetries: 0,
        ...args.params,
      });
      return {
        text: result.text,
        finishReason: result.finishReason,
        usage: result.usage,
        modelId: result.response.modelId,
        headers: pick(result.response.headers, "x-xenios-model", "x-xenios-fallback-used", "x-request-id"),
        error: null,
      };
    } catch (error) {
      return { error: { ...sdkError(error), isRetryable: error?.isRetryable ?? null } };
    }
  },
  async "ai.streamText"(args) {
    const errors = [];
    const result = streamText({
      model: provider(args).chatModel(args.model ?? "chat"),
      messages: args.messages,
      maxRetries: 0,
      onError: ({ error }) => errors.push(sdkError(error)),
      ...args.params,
    });
    let text = "";
    for await (const delta of result.textStream) text += delta;
    const finished = errors.length === 0;
    return {
      text,
      finishReason: await result.finishReason.catch(() => null),
      usage: finished ? await result.totalUsage : null,
      modelId: finished ? (await result.response).modelId : null,
      errors,
    };
  },
  async "ai.generateObject"(args) {
    try {
      const result = await generateObject({
        model: provider(args).chatModel(args.model ?? "intent_classification"),
        schema: Intent,
        messages: args.messages,
        maxRetries: 0,
      });
      return { object: result.object, modelId: result.response.modelId, usage: result.usage, error: null };
    } catch (error) {
      return { error: sdkError(error) };
    }
  },
};

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, case: name, args } = JSON.parse(line);
  let answer;
  try {
    answer = { id, ok: true, result: await cases[name](args ?? {}) };
  } catch (error) {
    answer = { id, ok: false, error: sdkError(error), stack: String(error?.stack ?? "") };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
process.exit(0); // stdin closed: done (keep-alive sockets must not hold the process)
