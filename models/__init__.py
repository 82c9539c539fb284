"""Architecture configs walkcut supports (JSON) and the default place exported models land."""
