"""Drawing helpers: one shared style, pixel grids, boxes and points. Imports matplotlib; computations never import this."""

from .style import (  # noqa: F401
    STYLE,
    CONVENTION_STYLES,
    apply_style,
    convention_style,
    legend_handles,
)
from .tables import Table, html_table, table  # noqa: F401
from .draw import (  # noqa: F401
    PixelGrid,
    BoxArtist,
    box_segments,
    box_xy,
    label_cells,
    set_box,
)
