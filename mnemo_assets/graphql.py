"""A small client for a running Dagster webserver's GraphQL API (asset backfills and their status).

>>> client = DagsterGraphQL("http://127.0.0.1:3000")  # doctest: +SKIP
>>> backfill_id = client.launch_asset_backfill({key: [("2024-12-01", "2024-12-07")]}, title="week 1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from dagster import AssetKey

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
  }
}
"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
  }
}
"""

BACKFILL_RUNS = """
query Runs($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { timestamp runs { runId } }
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
  }
}
"""

DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class GraphQLError(Exception):
    """The server answered with errors or an error type."""


class DagsterGraphQL:
    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, text: str, variables: Mapping | None = None) -> dict:
        body = json.dumps({"query": text, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.URLError as exc:
            raise GraphQLError(f"{self.url}/graphql: {exc}") from exc
        if payload.get("errors"):
            raise GraphQLError(f"{self.url}/graphql: {payload['errors'][0].get('message')}")
        return payload["data"]

    def wait_until_up(self, timeout: float = 120.0) -> None:
        """Wait for ``/server_info`` to answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise GraphQLError(f"{self.url} did not answer within {timeout:.0f}s") from None
                time.sleep(0.5)

    def launch_asset_backfill(
        self,
        ranges: Mapping[AssetKey, Sequence[tuple[str, str]]],
        title: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Launch an asset backfill of the given partition ranges per asset; its id."""
        params = {
            "partitionsByAssets": [
                {"assetKey": {"path": list(key.path)}, "partitions": {"ranges": [{"start": a, "end": b} for a, b in spans]}}
                for key, spans in ranges.items()
                if spans
            ],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        if title:
            params["title"] = title
        result = self.query(LAUNCH, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"backfill not launched: {result.get('__typename')}: {result.get('message') or result}")
        return result["backfillId"]

    def backfill_status(self, backfill_id: str) -> dict:
        """``{"status": ..., "assets": {key: {targeted, in_progress, materialized, failed}}}``."""
        data = self.query(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if data["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"backfill {backfill_id}: {data.get('message') or data['__typename']}")
        assets = {}
        for item in (data.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
            if item["__typename"] == "AssetPartitionsStatusCounts":
                assets["/".join(item["assetKey"]["path"])] = {
                    "targeted": item["numPartitionsTargeted"],
                    "in_progress": item["numPartitionsInProgress"],
                    "materialized": item["numPartitionsMaterialized"],
                    "failed": item["numPartitionsFailed"],
                }
        return {"status": data["status"], "assets": assets}

    def wait_for_backfill(self, backfill_id: str, timeout: float = 3600.0, poll: float = 2.0, on_progress=None) -> dict:
        """Poll until the backfill ends; ``on_progress(status)`` after every poll."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.backfill_status(backfill_id)
            if on_progress:
                on_progress(status)
            if status["status"] in DONE:
                return status
            if time.monotonic() > deadline:
                raise GraphQLError(f"backfill {backfill_id} still {status['status']} after {timeout:.0f}s")
            time.sleep(poll)

    def backfill_materializations(self, backfill_id: str, partitions: Mapping[AssetKey, Sequence[str]]) -> dict[AssetKey, set[str]]:
        """Per asset, which of the given partitions the backfill's own runs materialized (what
        the daemon did, as recorded in its instance; an earlier materialization does not count)."""
        data = self.query(BACKFILL_RUNS, {"id": backfill_id})["partitionBackfillOrError"]
        if data["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"backfill {backfill_id}: {data.get('message') or data['__typename']}")
        runs = {r["runId"] for r in data.get("runs") or []}
        after = str(int((float(data["timestamp"]) - 60) * 1000))
        keys = [k for k, days in partitions.items() if days]
        out: dict[AssetKey, set[str]] = {k: set() for k in partitions}
        for start in range(0, len(keys), 20):
            chunk = keys[start : start + 20]
            fields = []
            for i, key in enumerate(chunk):
                path = json.dumps(list(key.path))
                days = json.dumps(sorted(partitions[key]))
                fields.append(
                    f"a{i}: assetOrError(assetKey: {{path: {path}}}) {{ __typename ... on Asset {{ "
                    f'assetMaterializations(partitions: {days}, afterTimestampMillis: "{after}") {{ partition runId }} }} }}'
                )
            result = self.query("query {\n" + "\n".join(fields) + "\n}")
            for i, key in enumerate(chunk):
                node = result.get(f"a{i}") or {}
                for event in node.get("assetMaterializations") or []:
                    if event.get("runId") in runs and event.get("partition"):
                        out[key].add(event["partition"])
        return out
