"""Operations: the web endpoints, metrics, memory figures, the alert webhook."""
