"""What every capability uses: settings, clients, errors, names, entities, wire JSON, instants, telemetry."""
