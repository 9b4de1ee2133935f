def main() -> None:  # placeholder until the CLI lands
    raise SystemExit("tokenyield CLI not implemented yet")
