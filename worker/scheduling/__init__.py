"""Work that is not one conversation arriving: schedules fired by `posthoc beat` (a rerun or a
standalone analyzer), and the standalone runs over stored results they record."""
