"""Run the Graph emulator as a real process and talk to it as a real client would.

``running_emulator(state_dir, *args)`` starts ``python -m exchange_fuse.emulator`` on a free
port, waits for its ``emulator.json`` and stops it afterwards. The ``Emulator`` it yields
gets tokens through real MSAL, makes httpx clients that trust the emulator's CA, turns the
fault knobs and sets up mail through the Graph API itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msal

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def enc(identifier: str) -> str:
    """An id made safe for a URL path segment (Graph ids contain ``/``, ``+``, ``=``)."""
    return quote(identifier, safe="")


class MsalHttpClient(httpx.Client):
    """An httpx client for MSAL's ``http_client``.

    MSAL builds certificate assertions as bytes; httpx would send a bytes form value as the
    text ``b'...'``, which Entra ID (and the emulator) reject. Send bytes as text instead.
    """

    def post(self, url: Any, *args: Any, data: Any = None, **kwargs: Any) -> httpx.Response:
        if isinstance(data, dict):
            data = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        return super().post(url, *args, data=data, **kwargs)


class Emulator:
    """A running emulator: the fields of its ``emulator.json`` plus client helpers."""

    def __init__(self, state: dict[str, Any], process: subprocess.Popen[bytes]) -> None:
        self.state = state
        self.process = process
        self.graph_url: str = state["graph_url"]
        self.authority_url: str = state["authority_url"]
        self.tenant_id: str = state["tenant_id"]
        self.client_id: str = state["client_id"]
        self.client_secret: str = state["client_secret"]
        self.ca_bundle: str = state["ca_bundle"]
        self.control_url: str = state["control_url"]
        self.mailboxes: list[str] = list(state["mailboxes"])
        self._ssl = ssl.create_default_context(cafile=self.ca_bundle)
        self._http = httpx.Client(verify=self._ssl, timeout=30.0)
        self._msal: msal.ConfidentialClientApplication | None = None

    # -- clients --------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        return self._ssl

    def msal_app(self, client_credential: Any | None = None) -> msal.ConfidentialClientApplication:
        """A real MSAL application pointed at the emulator (its own token cache)."""
        return msal.ConfidentialClientApplication(
            self.client_id,
            client_credential=client_credential or self.client_secret,
            authority=self.authority_url,
            instance_discovery=False,
            http_client=MsalHttpClient(verify=self._ssl, timeout=30.0),
        )

    def token(self) -> str:
        """A bearer token from the emulator, through MSAL (cached by MSAL while valid)."""
        if self._msal is None:
            self._msal = self.msal_app()
        result = self._msal.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        if "access_token" not in result:
            raise RuntimeError(
                f"no token: {result.get('error')}: {result.get('error_description')}"
            )
        return str(result["access_token"])

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for Graph: bearer token, the emulator's CA, base_url = graph_url."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return httpx.Client(
            base_url=self.graph_url,
            verify=self._ssl,
            headers=headers,
            timeout=kwargs.pop("timeout", 30.0),
            **kwargs,
        )

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return httpx.AsyncClient(
            base_url=self.graph_url,
            verify=self._ssl,
            headers=headers,
            timeout=kwargs.pop("timeout", 30.0),
            **kwargs,
        )

    # -- control --------------------------------------------------------------------------

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change limits and faults at run time (keys as in ``/_emulator/faults``)."""
        response = self._http.post(f"{self.control_url}/faults", json=settings)
        if response.status_code != 200:
            raise ValueError(response.text)
        return dict(response.json())

    def reset_faults(self) -> dict[str, Any]:
        response = self._http.post(f"{self.control_url}/faults/reset")
        response.raise_for_status()
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        response = self._http.get(f"{self.control_url}/stats")
        response.raise_for_status()
        return dict(response.json())

    def reset_stats(self) -> None:
        self._http.delete(f"{self.control_url}/stats").raise_for_status()

    def revoke_tokens(self) -> None:
        """Make every issued token invalid (as an admin revoking consent would)."""
        self._http.post(f"{self.control_url}/tokens/revoke").raise_for_status()
        self._msal = None

    def expire_delta_tokens(self) -> None:
        self._http.post(f"{self.control_url}/delta/expire").raise_for_status()

    # -- Graph helpers for test setup -----------------------------------------------------

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**IMMUTABLE, **kwargs.pop("headers", {})}
        with self.client() as client:
            response = client.request(method, url, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
        return response

    def _folder_path(self, mailbox: str, folder: str) -> str:
        return f"/users/{enc(mailbox)}/mailFolders/{enc(folder)}"

    def add_message(self, mailbox: str, folder: str, mime: bytes) -> str:
        """Deliver a MIME message into a folder (id or well-known name); its immutable id."""
        response = self._call(
            "POST",
            f"{self._folder_path(mailbox, folder)}/messages",
            content=base64.b64encode(mime),
            headers={"Content-Type": "text/plain"},
        )
        return str(response.json()["id"])

    def add_attachment(
        self,
        mailbox: str,
        message_id: str,
        name: str | None,
        content: bytes,
        *,
        content_type: str = "application/octet-stream",
        is_inline: bool = False,
        content_id: str | None = None,
    ) -> str:
        """Attach a file to a message; the attachment's (immutable-format) id."""
        body = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": name,
            "contentType": content_type,
            "contentBytes": base64.b64encode(content).decode("ascii"),
            "isInline": is_inline,
            "contentId": content_id,
        }
        url = f"/users/{enc(mailbox)}/messages/{enc(message_id)}/attachments"
        return str(self._call("POST", url, json=body).json()["id"])

    def create_folder(self, mailbox: str, parent: str, name: str, *, hidden: bool = False) -> str:
        """Create a folder under ``parent`` (id or well-known name); the new folder's id."""
        body = {"displayName": name, "isHidden": hidden}
        url = f"{self._folder_path(mailbox, parent)}/childFolders"
        return str(self._call("POST", url, json=body).json()["id"])

    def rename_folder(self, mailbox: str, folder: str, name: str) -> None:
        self._call("PATCH", self._folder_path(mailbox, folder), json={"displayName": name})

    def delete_folder(self, mailbox: str, folder: str) -> None:
        self._call("DELETE", self._folder_path(mailbox, folder))

    def delete_message(self, mailbox: str, message_id: str) -> None:
        self._call("DELETE", f"/users/{enc(mailbox)}/messages/{enc(message_id)}")

    def move_message(self, mailbox: str, message_id: str, destination: str) -> str:
        url = f"/users/{enc(mailbox)}/messages/{enc(message_id)}/move"
        return str(self._call("POST", url, json={"destinationId": destination}).json()["id"])

    def list_folders(self, mailbox: str, *, hidden: bool = False) -> list[dict[str, Any]]:
        """Every folder under Top of Information Store, parents before children."""
        found: list[dict[str, Any]] = []
        query = "?$top=100" + ("&includeHiddenFolders=true" if hidden else "")
        pending = [f"/users/{enc(mailbox)}/mailFolders{query}"]
        while pending:
            url: str | None = pending.pop(0)
            while url:
                body = self._call("GET", url).json()
                for folder in body["value"]:
                    found.append(folder)
                    if folder.get("childFolderCount"):
                        pending.append(
                            f"{self._folder_path(mailbox, folder['id'])}/childFolders{query}"
                        )
                url = body.get("@odata.nextLink")
        return found

    def list_messages(self, mailbox: str, folder: str, select: str = "id,subject") -> list[Any]:
        """Every message of a folder (following nextLink), with their attachments listed."""
        url: str | None = (
            f"{self._folder_path(mailbox, folder)}/messages?$top=1000&$select={select}"
            "&$expand=attachments($select=id,name,contentType,size,isInline)"
        )
        found: list[Any] = []
        while url:
            body = self._call("GET", url).json()
            found.extend(body["value"])
            url = body.get("@odata.nextLink")
        return found


@contextlib.contextmanager
def running_emulator(state_dir: Path, *args: str) -> Iterator[Emulator]:
    """Start the emulator with ``args``; yields once it serves, stops it on exit."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / "emulator.json"
    state_file.unlink(missing_ok=True)
    stderr_path = state_dir / "emulator.stderr"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange_fuse.emulator",
                "--port",
                "0",
                "--state-dir",
                str(state_dir),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not state_file.exists():
            if process.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with {process.returncode}: "
                    + stderr_path.read_text(errors="replace").strip()
                )
            if time.monotonic() > deadline:
                raise RuntimeError("emulator did not start within 30 s")
            time.sleep(0.05)
        emulator = Emulator(json.loads(state_file.read_text()), process)
        try:
            yield emulator
        finally:
            emulator._http.close()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
