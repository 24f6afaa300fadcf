"""Flows for the `engine` command tests."""


def greet(system, this, inputs):
    name = inputs.get("name", "world")
    count = inputs.get("count", 2)
    words = []
    for i in range(count):
        this.log("step", i)
        words.append(f"hello {name} {i}")
    this.save_dump("after-loop")
    if inputs.get("fail") and this.restore_count == 0:
        raise ValueError(f"asked to fail for {name}")
    return " / ".join(words)
