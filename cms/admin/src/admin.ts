// The admin page: a paged, filterable pin list and an editor, on the CMS's JSON API.

import {
  ApiError,
  listPins,
  savePin,
  signIn,
  signOut,
  signedIn,
  version,
  type Pin,
  type PinInput,
  type Status,
} from "./api";

const PAGE = 25;
let offset = 0;
let pins: Pin[] = [];

function $(selector: string): HTMLElement {
  const element = document.querySelector<HTMLElement>(selector);
  if (!element) throw new Error(`missing ${selector}`);
  return element;
}

function cell(text: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function showSession(): void {
  const inside = signedIn();
  $("#session-state").textContent = inside ? "Signed in" : "Public view: published pins only";
  ($("#signin") as HTMLFormElement).hidden = inside;
  ($("#signout") as HTMLButtonElement).hidden = !inside;
}

async function refresh(): Promise<void> {
  const filters = new FormData($("#filters") as HTMLFormElement);
  let page;
  try {
    page = await listPins({
    tag: String(filters.get("tag") ?? "").trim(),
    status: String(filters.get("status") ?? ""),
      limit: PAGE,
      offset,
    });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut(); // the token is no longer valid: back to the public view
      showSession();
      $("#summary").textContent = `${error.message}: sign in again.`;
      return;
    }
    throw error;
  }
  pins = page.items;
  const body = $("#pins tbody");
  body.replaceChildren(
    ...pins.map((pin) => {
      const row = document.createElement("tr");
      row.dataset.pinId = String(pin.id);
      const edit = document.createElement("button");
      edit.textContent = "Edit";
      edit.addEventListener("click", () => load(pin));
      const actions = document.createElement("td");
      actions.append(edit);
      row.append(cell(pin.title), cell(pin.place_name ?? ""), cell(pin.tags.join(", ")), cell(pin.status), actions);
      return row;
    }),
  );
  const last = Math.min(offset + pins.length, page.total);
  $("#summary").textContent = page.total ? `${offset + 1}–${last} of ${page.total} pins` : "No pins yet.";
  ($("#prev") as HTMLButtonElement).disabled = offset === 0;
  ($("#next") as HTMLButtonElement).disabled = last >= page.total;
}

function form(): HTMLFormElement {
  return $("#editor") as HTMLFormElement;
}

function load(pin: Pin | null): void {
  const f = form();
  f.reset();
  (f.elements.namedItem("id") as HTMLInputElement).value = pin ? String(pin.id) : "";
  $("#editor-title").textContent = pin ? `Edit “${pin.title}”` : "New pin";
  if (!pin) return;
  for (const name of ["title", "body", "latitude", "longitude", "status"] as const) {
    (f.elements.namedItem(name) as HTMLInputElement).value = String(pin[name]);
  }
  (f.elements.namedItem("tags") as HTMLInputElement).value = pin.tags.join(", ");
}

async function save(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const data = new FormData(form());
  const id = String(data.get("id") ?? "");
  const pin: PinInput = {
    title: String(data.get("title")),
    body: String(data.get("body") ?? ""),
    latitude: Number(data.get("latitude")),
    longitude: Number(data.get("longitude")),
    tags: String(data.get("tags") ?? "").split(",").map((t) => t.trim()).filter(Boolean),
    status: String(data.get("status")) as Status,
  };
  const message = $("#message");
  let saved: Pin;
  try {
    saved = await savePin(id ? Number(id) : null, pin);
  } catch (error) {
    message.className = "error";
    const hint = error instanceof ApiError && error.status === 401 ? " Sign in with a token." : "";
    message.textContent = error instanceof ApiError ? error.message + hint : "Could not reach the CMS.";
    return;
  }
  message.className = "";
  message.textContent = `Saved “${saved.title}”.`;
  load(null);
  await refresh();
}

function main(): void {
  ($("#filters") as HTMLFormElement).addEventListener("submit", (event) => {
    event.preventDefault();
    offset = 0;
    void refresh();
  });
  $("#prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); void refresh(); });
  $("#next").addEventListener("click", () => { offset += PAGE; void refresh(); });
  // (never id="reset": a form's element of that id hides its reset() method)
  $("#new-pin").addEventListener("click", () => load(null));
  form().addEventListener("submit", (event) => void save(event));
  ($("#signin") as HTMLFormElement).addEventListener("submit", (event) => {
    event.preventDefault();
    const field = ($("#signin") as HTMLFormElement).elements.namedItem("token") as HTMLInputElement;
    signIn(field.value);
    field.value = "";
    showSession();
    void refresh();
  });
  $("#signout").addEventListener("click", () => {
    signOut();
    showSession();
    void refresh();
  });
  showSession();
  void version().then((v) => { $("#version").textContent = `v${v.version} · schema ${v.schema_revision ?? "?"}`; });
  void refresh();
}

main();
