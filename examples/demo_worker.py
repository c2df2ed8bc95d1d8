"""The demo's worker: a diamond workflow triggered by ``user:create`` events.

validate -> (welcome_email, provision) -> activate
"""

from worker import Context, Hatchet

hatchet = Hatchet()


@hatchet.workflow(on_events=["user:create"])
class UserSignup:
    @hatchet.step()
    def validate(self, context: Context) -> dict[str, object]:
        user = context.workflow_input()
        context.log(f"validating user {user['id']}")
        return {"user_id": user["id"], "email": user["email"].lower()}

    @hatchet.step(parents=["validate"])
    async def welcome_email(self, context: Context) -> dict[str, object]:
        return {"sent_to": context.step_output("validate")["email"]}

    @hatchet.step(parents=["validate"])
    def provision(self, context: Context) -> dict[str, object]:
        return {"workspace": f"ws-{context.step_output('validate')['user_id']}"}

    @hatchet.step(parents=["welcome_email", "provision"])
    def activate(self, context: Context) -> dict[str, object]:
        return {
            "active": True,
            "email": context.step_output("welcome_email")["sent_to"],
            "workspace": context.step_output("provision")["workspace"],
        }


if __name__ == "__main__":
    worker = hatchet.worker("demo-worker", max_runs=4)
    worker.register_workflow(UserSignup())
    worker.start()
