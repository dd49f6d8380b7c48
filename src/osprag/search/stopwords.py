"""Small built-in stopword lists for German and English.

Written by hand rather than downloaded (NLTK, spaCy) so that the analysis is the same on every
machine and cannot change under an index that was built with it. Kept short on purpose:
function words only, nothing a QM question could hinge on ("nicht", "kein", "ohne", "no" and
"not" stay out, as do words that are also units or codes). Words are stored unfolded; the
analyzer folds them the way it folds text.
"""

from __future__ import annotations

GERMAN = frozenset(
    """
    aber alle allem allen aller alles als also am an andere anderen anderer anderes auch auf aus
    bei beim bin bis bist bzw da dabei damit dann darauf darin das dass daß dazu dem den denen
    denn der deren des dessen die dies diese diesem diesen dieser dieses doch dort du durch
    ein eine einem einen einer eines einige einigen er es etwa etwas euch euer eure
    für gegen gewesen hab habe haben hat hatte hatten hier hin ich ihm ihn ihnen ihr ihre ihrem
    ihren ihrer ihres im in indem ins ist jede jedem jeden jeder jedes jene jenem jenen jener
    jenes man mich mir mit nach nun nur ob oder sehr sein seine seinem seinen seiner seines
    seit sich sie sind so solche solchem solchen solcher soll sollen sollte sondern sowie
    über um und uns unser unsere unserem unseren unserer unter vom von vor war waren was
    weil welche welchem welchen welcher welches wenn wer werde werden wie wieder wir wird
    wo wann warum wieso weshalb wozu woher wohin wofür wodurch womit worauf worin wurde wurden
    würde würden zu zum zur zwar
    """.split()
)

ENGLISH = frozenset(
    """
    a about after all also am an and any are as at be been before being between both but by
    can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most
    my myself of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why
    will with would you your yours yourself yourselves
    """.split()
)
