// The CMS JSON API, typed.

export type Status = "draft" | "published";

export interface Pin {
  id: number;
  title: string;
  slug: string | null;
  body: string;
  place_name: string | null;
  latitude: number;
  longitude: number;
  tags: string[];
  status: Status;
  created_at: string;
  updated_at: string;
}

export interface PinPage {
  items: Pin[];
  total: number;
  limit: number;
  offset: number;
}

export type PinInput = Pick<Pin, "title" | "body" | "latitude" | "longitude" | "tags" | "status">;

export class ApiError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

// The API token the page signs in with: kept for this tab only (sessionStorage), never in a
// cookie, so no other site can make the browser send it.
const TOKEN = "lorepin-token";

export function signIn(token: string): void {
  sessionStorage.setItem(TOKEN, token.trim());
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN);
}

export function signedIn(): boolean {
  return sessionStorage.getItem(TOKEN) !== null;
}

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  const token = sessionStorage.getItem(TOKEN);
  const response = await fetch(path, {
    ...init,
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(init?.headers ?? {}),
    },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: response.statusText }));
    const detail = Array.isArray(body.detail)
      ? `: ${body.detail.map((d: { loc: string[]; msg: string }) => `${d.loc[d.loc.length - 1]} ${d.msg}`).join("; ")}`
      : "";
    throw new ApiError(`${body.error ?? "request failed"}${detail}`, response.status);
  }
  return (response.status === 204 ? undefined : await response.json()) as T;
}

export function listPins(query: { tag?: string; status?: string; limit: number; offset: number }): Promise<PinPage> {
  const params = new URLSearchParams({ limit: String(query.limit), offset: String(query.offset) });
  if (query.tag) params.set("tag", query.tag);
  if (query.status) params.set("status", query.status);
  return call<PinPage>(`/api/pins?${params}`);
}

export function savePin(id: number | null, pin: PinInput): Promise<Pin> {
  return id === null
    ? call<Pin>("/api/pins", { method: "POST", body: JSON.stringify(pin) })
    : call<Pin>(`/api/pins/${id}`, { method: "PATCH", body: JSON.stringify(pin) });
}

export function version(): Promise<{ version: string; schema_revision: string | null }> {
  return call("/version");
}
