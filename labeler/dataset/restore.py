"""What `labeler repair` asks of a dataset, as the `DatasetWriter` that holds it (the lock, the journal):
the records restored first (settings, shard index, row plan, the store's metadata), then per damaged shard
what is still trustworthy in it (each table on its own, the arrays against their digests) and where its
sources are. Nothing here deletes a file; the rewrite itself is the writer's (`begin` ... `finish`).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from data_schema.manifest import Manifest, ObjectRow, RunSettings, SampleRecord, ShardEntry, ShardPlan
from labeler.dataset.index import ROW_PLAN_NAME, SHARD_INDEX_NAME, read_row_plan, read_shard_index
from labeler.dataset.manifest import library_versions, load_manifest
from labeler.dataset.shards import STORE_NAME, open_arrays, read_rows, restore_metadata, store_layout
from labeler.dataset.tables import shard_objects, shard_samples
from labeler.errors import InputError


class RepairSteps:
    """The repair side of `DatasetWriter` (writer.py)."""

    out: Path

    def restore_records(
        self,
    ) -> tuple[RunSettings, dict[int, ShardEntry], dict[int, ShardPlan], Manifest, list[str]]:
        """Repair's first step: the trusted settings, the shard index and row plan (each rebuilt when
        damaged), the store's metadata (rewritten from the layout when damaged), the manifest to seal
        (always from the settings), and what was rebuilt."""
        from labeler.dataset.manifest import seal_problems
        from labeler.dataset.rebuild import rebuild_row_plan, rebuild_shard_index, trusted_settings
        from labeler.dataset.seal import file_matches

        settings = trusted_settings(self.out)
        try:
            old: Manifest | None = load_manifest(self.out)
        except InputError:
            old = None
        seal = seal_problems(self.out, old, cut_tail=True) if old is not None else ["no readable manifest"]
        rebuilt = []
        problems: list[str] = []
        index = read_shard_index(self.out, problems=problems)
        if problems or old is None or any(f"/{SHARD_INDEX_NAME}:" in p for p in seal):
            index = rebuild_shard_index(self.out, settings)
            rebuilt.append(SHARD_INDEX_NAME)
        problems = []
        plan = read_row_plan(self.out, problems=problems)
        if problems or any(f"/{ROW_PLAN_NAME}:" in p for p in seal) or set(index) - set(plan):
            plan = rebuild_row_plan(self.out, index)
            rebuilt.append(ROW_PLAN_NAME)
        n_rows = max((p.row_start + len(p.sample_ids) for p in plan.values()), default=0)
        w, h = settings.calibration.image_size
        layout = store_layout(n_rows, h, w, settings.samples_per_shard)
        if old is not None:  # arrays made with an earlier codec keep it (the manifest's name for it)
            codec = {a.name: a.compressor for a in old.layout.arrays}
            layout = layout.model_copy(
                update={
                    "arrays": [
                        a.model_copy(update={"compressor": codec.get(a.name, a.compressor)})
                        for a in layout.arrays
                    ]
                }
            )
        named = {  # zarr.json files whose bytes differ from the manifest's seal, even where they parse
            self.out / name
            for name, seal_ in (old.files.items() if old is not None else [])
            if name.endswith("zarr.json") and not file_matches(self.out / name, seal_)
        }
        if restore_metadata(self.out, layout, named):
            rebuilt.append(f"{STORE_NAME} metadata")
        if seal or old is None or old.run_key != settings.run_key:
            rebuilt.append("manifest.json")
        base = Manifest(
            dataset_version=settings.run_key,
            labeler_version=metadata.version("labeler"),
            calibration=settings.calibration,
            calibration_sha256=settings.calibration_sha256,
            depth=settings.depth,
            stereo=settings.stereo,
            masks=settings.masks,
            classes=settings.classes,
            run_key=settings.run_key,
            objects=settings.objects,
            library_versions=library_versions(),
            layout=layout,
        )
        return settings, index, plan, base, rebuilt

    def shard_problems(self, entry: ShardEntry, manifest: Manifest) -> list[str]:
        from labeler.dataset.validate import shard_problems

        return shard_problems(self.out, entry, manifest)

    def changed_table_files(self, entries: dict[int, ShardEntry]) -> dict[int, list[str]]:
        """Shards that name a table file whose bytes changed since written (each file hashed once)."""
        from labeler.dataset.tables import changed_table_files

        out: dict[int, list[str]] = {}
        for path, shards in changed_table_files(self.out, entries.values()).items():
            for s in shards:
                out.setdefault(s, []).append(f"{path}: file bytes changed since written")
        return out

    def shard_contents(
        self, entry: ShardEntry
    ) -> tuple[list[SampleRecord], dict[int, list[ObjectRow]] | None, bool]:
        """A shard's records (empty when its samples part is lost or unreadable), its objects by row (None
        when that part is lost, unreadable or not the rows its entry hashed), and whether the records are
        the rows its entry hashed. Each table on its own: a lost objects part leaves the records, which
        name the sources to relabel from."""
        from labeler.dataset.tables import rows_sha256

        try:
            samples = shard_samples(self.out, entry)
        except Exception:  # noqa: BLE001 — a lost or unreadable table: nothing is known of its rows
            samples = []
        by_row: dict[int, list[ObjectRow]] | None = None
        try:
            objects = shard_objects(self.out, entry)
            if rows_sha256(objects) == entry.objects.sha256:
                by_row = {}
                for o in objects:
                    by_row.setdefault(o.row, []).append(o)
        except Exception:  # noqa: BLE001
            pass
        return samples, by_row, bool(samples) and rows_sha256(samples) == entry.samples.sha256

    def sample_problems(self, rec: SampleRecord, objects: list[ObjectRow], manifest: Manifest) -> list[str]:
        """validate's checks of one stored sample (arrays against the record's digests and statistics)."""
        from labeler.dataset.validate import sample_problems

        try:
            raw = read_rows(open_arrays(self.out), rec.row)
        except Exception as err:  # noqa: BLE001 — unreadable arrays are damage
            return [f"sample {rec.sample_id}: arrays unreadable ({type(err).__name__})"]
        return sample_problems(raw, rec, objects, manifest)

    def source_folders(self, entries: dict[int, ShardEntry]) -> list[Path]:
        """The folders the dataset's readable records name as their sources (see sources.py)."""
        from labeler.dataset.sources import recorded_folders

        return recorded_folders(self.out, entries.values())

    def find_sources(
        self, sample_id: str, row: int, rec: SampleRecord | None, sources: Path | None, folders: list[Path]
    ) -> dict | None:
        """A sample's rectified images for relabelling (see labeler/dataset/sources.py)."""
        from labeler.dataset.sources import find_sources

        return find_sources(self.out, sample_id, row, rec, sources, folders)
