"""Graph-replay times of one bench_kernels.py run against an earlier run's, case by case (CPU).

    python3 compare.py NEW.csv[,NEW2.csv] OLD.csv[,OLD2.csv]

Columns: floor, FlashInfer's best kernel as graph replays (FIg), PAT as graph replays (PATg), PATg / FIg,
PATg / floor; then the earlier run's PATg and PATg / FIg, and this run's PATg over the earlier one's. Where several
earlier files hold a case, the first one named is used."""
import csv
import sys


def load(path: str) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def num(x: str | None) -> float:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def main() -> None:
    new: dict[str, dict[str, str]] = {}
    for path in sys.argv[1].split(","):
        new.update(load(path))
    old: dict[str, dict[str, str]] = {}
    for path in sys.argv[2].split(","):
        for key, row in load(path).items():
            old.setdefault(key, row)
    print(f"{'case':34} {'floor':>7} {'FIg':>7} {'PATg':>7} {'PAT/FI':>7} {'PAT/flr':>7} | "
          f"{'old PATg':>8} {'old/FI':>7} {'new/old':>7}")
    for key, row in new.items():
        fi, pat, floor = num(row["fi_best_graph"]), num(row["pat_graph"]), num(row["floor_us"])
        prev = old.get(key, {})
        old_pat, old_fi = num(prev.get("pat_graph")), num(prev.get("fi_best_graph"))
        print(f"{key:34} {floor:7.1f} {fi:7.1f} {pat:7.1f} {pat / fi:7.3f} {pat / floor:7.2f} | "
              f"{old_pat:8.1f} {old_pat / old_fi:7.3f} {pat / old_pat:7.3f}")


if __name__ == "__main__":
    main()
