"""Drawing helpers: one shared style, pixel grids, boxes and points. Imports matplotlib; computations never import this."""

from .draw import (  # noqa: F401
    BoxArtist,
    PixelGrid,
    box_segments,
    box_xy,
    label_cells,
    set_box,
)
from .style import (  # noqa: F401
    CONVENTION_STYLES,
    STYLE,
    apply_style,
    convention_style,
    legend_handles,
)
from .tables import Table, html_table, table  # noqa: F401
