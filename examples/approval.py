"""Flows to try messages, idempotent starts, connector retries and schedules on (README:
"Reaching a running execution").  `engine worker --flows approval` calls register(eng)."""
_calls = []


def order(system, this, inputs):
    """Waits for a person's approval (engine send ID approval JSON), at most a day."""
    this.log("order", inputs, "waits for approval")
    approval = this.receive("approval", timeout=24 * 3600)
    if approval is None:
        return this.error("nobody approved it within a day")
    receipt = this.connect("payments", amount=inputs.get("amount", 0))
    return {"approved_by": approval.get("by"), "receipt": receipt}


def payments(amount):
    """A payment service whose first call in a process fails: tried again (retries=3)
    after 0.5 s, then 1 s, then 2 s -- each wait a durable sleep."""
    _calls.append(amount)
    if len(_calls) == 1:
        raise ConnectionError("payment service unavailable")
    return f"paid {amount}"


def heartbeat(system, this, inputs):
    this.log("tick", inputs)
    return inputs


def register(eng):
    eng.add_connector("payments", payments, retries=3, backoff=0.5)
