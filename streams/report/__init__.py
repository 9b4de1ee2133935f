"""What people read: the live view, the HTML report and its SVG charts, FOCUS export."""
