// A small client of the Xenios AI backend, typed by the types openapi-typescript generates from
// /schema/openapi.json (generated/api.d.ts, written by tests/clients/test_openapi_typescript.py).
// It only has to compile: a change of the API contract that breaks the MVP's code breaks this.
import type { components, paths } from "./generated/api";

type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];
export type Job = paths["/api/v1/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"];
export type JobPage = paths["/api/v1/jobs"]["get"]["responses"]["200"]["content"]["application/json"];
export type Accepted = paths["/api/v1/jobs/analysis"]["post"]["responses"]["202"]["content"]["application/json"];
export type AnalysisBody = paths["/api/v1/jobs/analysis"]["post"]["requestBody"]["content"]["application/json"];
export type CompleteBody = paths["/api/v1/llm/complete"]["post"]["requestBody"]["content"]["application/json"];
export type TranscriptionForm =
  paths["/api/v1/jobs/transcription"]["post"]["requestBody"]["content"]["multipart/form-data"];
type NotFound = paths["/api/v1/jobs/{job_id}"]["get"]["responses"]["404"]["content"]["application/problem+json"];
type StreamFailed = paths["/api/v1/llm/stream"]["post"]["responses"]["503"]["content"]["application/problem+json"];
type Unprocessable = paths["/api/v1/jobs"]["get"]["responses"]["422"]["content"]["application/problem+json"];

export class XeniosError extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
  }
}

export class Xenios {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey: string,
  ) {}

  private async call<T>(path: string, init: RequestInit = {}, userToken?: string): Promise<T> {
    const headers = new Headers(init.headers);
    headers.set("X-API-Key", this.apiKey);
    if (userToken !== undefined) headers.set("Authorization", `Bearer ${userToken}`);
    const response = await fetch(this.baseUrl + path, { ...init, headers });
    if (!response.ok) throw new XeniosError((await response.json()) as Problem);
    return (await response.json()) as T;
  }

  /** A webhook handler's read: the API key alone, any owner's job. */
  job(id: string): Promise<Job> {
    return this.call<Job>(`/api/v1/jobs/${id}`);
  }

  /** A user's jobs, read by the service (owner is required without a user token). */
  jobsOf(owner: paths["/api/v1/jobs"]["get"]["parameters"]["query"] extends infer Q
    ? Q extends { owner?: infer O } ? NonNullable<O> : never : never): Promise<JobPage> {
    return this.call<JobPage>(`/api/v1/jobs?owner=${encodeURIComponent(owner)}`);
  }

  summarise(userToken: string, body: AnalysisBody): Promise<Accepted> {
    return this.call<Accepted>(
      "/api/v1/jobs/analysis",
      { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } },
      userToken,
    );
  }

  transcribe(userToken: string, audio: Blob, options: TranscriptionForm["options"]): Promise<Accepted> {
    const form = new FormData();
    form.set("file", audio, "session.mp3");
    if (options) form.set("options", JSON.stringify(options));
    return this.call<Accepted>("/api/v1/jobs/transcription", { method: "POST", body: form }, userToken);
  }
}

// What the types must say (compile-time checks).
export const accepted = (a: Accepted): string => a.id; // `id`, as in every job object
export const deprecatedAlias = (a: Accepted): string => a.job_id;
export const status = (job: Job): "queued" | "running" | "succeeded" | "failed" | "cancelled" => job.status;
export const problems: Array<NotFound | StreamFailed | Unprocessable> = [];
export const code = (p: NotFound): string => p.code;
export const chat: CompleteBody = { task: "chat", input: "hello" };
// @ts-expect-error the task is one of the catalogue's
export const unknownTask: CompleteBody = { task: "no_such_task", input: "hello" };
export const byText: AnalysisBody = { task: "session_summary", text: "Coach: ..." };
export const bySource: AnalysisBody = { task: "insight_generation", source_job_id: "00000000-0000-0000-0000-000000000000" };
export const withResult: AnalysisBody = { task: "session_summary", text: "...", webhook_include_result: true };
export const form = (f: TranscriptionForm): string => f.file;
export type Delta = Schemas["Delta"];
export type Done = Schemas["Done"];
export type Progress = Schemas["Progress"];
export const text = (d: Delta): string => d.content;
