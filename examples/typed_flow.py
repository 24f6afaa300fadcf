"""A flow annotated for mypy: engine.System and engine.This type a flow's parameters, so
a misspelt Flow-API method or a wrong argument is caught before anything runs.  CI runs
`python3 -m mypy examples/typed_flow.py`.

    python examples/typed_flow.py        # runs it in a temporary store
"""
import tempfile

import engine


def price(sku: str) -> float:
    """A connector: this.connect("price", sku=...) calls it."""
    return {"apple": 0.5, "pear": 0.75}.get(sku, 1.0)


def line_total(system: engine.System, this: engine.This, inputs: dict) -> float:
    """A child flow: one order line."""
    unit: float = this.connect("price", sku=inputs["sku"])
    return unit * inputs["qty"]


def handler(system: engine.System, this: engine.This, inputs: dict) -> float:
    orders = system.setting("orders-seen")
    seen: int = orders.get() or 0
    orders.set(seen + 1)
    this.log("order", this.id, "with", len(inputs["lines"]), "lines")
    this.save_dump("before-pricing")
    children = [this.flow(line_total, line, wait=False) for line in inputs["lines"]]
    totals: list[float] = this.wait_for(*children)
    total = sum(totals)
    this.set_output("total", total)
    this.sleep(0.01)
    if total > 1000:
        this.error(f"order too large: {total}")
    return total


def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        eng = engine.Engine(path)
        with eng:
            eng.add_connector("price", price)
            order = {"lines": [{"sku": "apple", "qty": 4}, {"sku": "pear", "qty": 2}]}
            ex: engine.Execution = eng.execute(handler, order)
            print(ex.status.value, ex.output, ex.outputs)
            for sp in eng.savepoints(ex.id):
                print(f"  {sp.seq:3} line {sp.line:3} {sp.action:12} {sp.command}")


if __name__ == "__main__":
    main()
