"""Drawing helpers: one shared style, pixel grids, boxes and points. Imports matplotlib; computations never import this."""

from explainer.viz.draw import BoxArtist, PixelGrid, box_segments, box_xy, label_cells, set_box  # noqa: F401
from explainer.viz.style import CONVENTION_STYLES, STYLE, apply_style, convention_style, legend_handles  # noqa: F401
from explainer.viz.tables import Table, html_table, table  # noqa: F401
